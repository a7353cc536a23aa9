/// The `users` table: its columns, in table order, and the SQL that makes it.
enum UsersTable {
    /// Every column a client may ask for; user input names columns only by
    /// matching one of these, so no client text reaches SQL as an identifier.
    static let columns = [
        "id", "email", "full_name", "country_code", "subscription_tier",
        "lifetime_value", "created_at", "last_login_at", "notes",
    ]

    /// The columns of text types, the ones formula guarding applies to.
    static let textColumns: Set<String> = ["email", "full_name", "country_code", "subscription_tier", "notes"]

    static let tiers = ["free", "basic", "pro", "enterprise"]

    /// Created without keys or indexes: they are added after the rows, which
    /// is several times faster than maintaining them row by row.
    static let createTable = """
        CREATE TABLE users (
            id bigint NOT NULL,
            email text NOT NULL,
            full_name text NOT NULL,
            country_code char(2) NOT NULL,
            subscription_tier text NOT NULL,
            lifetime_value numeric(12,2) NOT NULL,
            created_at timestamptz NOT NULL,
            last_login_at timestamptz,
            notes text
        )
        """

    /// The primary key and one index per filter.
    static let createIndexes = """
        ALTER TABLE users ADD PRIMARY KEY (id);
        CREATE INDEX users_country_code_idx ON users (country_code);
        CREATE INDEX users_subscription_tier_idx ON users (subscription_tier);
        CREATE INDEX users_lifetime_value_idx ON users (lifetime_value);
        """

    /// Rows `$1` through `$2`, each a pure function of its id, so every seeding
    /// gives the same bytes. Only second-based intervals are added to
    /// timestamps, which keeps them independent of the session's time zone.
    /// The values exercise CSV: commas, double quotes, newlines (LF and CRLF),
    /// tabs, non-ASCII letters, a lone `\.`, NULL next to the empty string,
    /// and text that a spreadsheet would read as a formula.
    static let insertRange = #"""
        INSERT INTO users
        SELECT
            i,
            'user' || i || '@example.' || (ARRAY['com','org','net','de','co.uk'])[1 + i % 5],
            (ARRAY['Ada','José','Zoë','Björn','Łukasz','Søren','Ólafur','Chloé','Mary-Jane','李','"Chip"','Amélie',
                   'Nguyễn','Åsa','Renée','Dmitri','Siobhán','O''Neil','Ana María','Jürgen'])[1 + (i * 7) % 20]
            || CASE WHEN i % 97 = 0 THEN E'\n' ELSE ' ' END
            || (ARRAY['Smith','García','Müller','O''Brien','Smith, Jr.','Doe "The Quick"','Østergård','Kowalski',
                      'Dubois','van der Berg','Tanaka','Ivanova','Rossi','Okafor','Ünal','Silva, Filho','Lefèvre',
                      'Ng','Brontë','Żółć'])[1 + (i * 13 + i / 20) % 20],
            (ARRAY['US','GB','DE','FR','JP','BR','IN','CA','AU','ES'])[1 + (i * 2654435761) % 10],
            CASE
                WHEN (i * 7919) % 100 < 50 THEN 'free'
                WHEN (i * 7919) % 100 < 80 THEN 'basic'
                WHEN (i * 7919) % 100 < 95 THEN 'pro'
                ELSE 'enterprise'
            END,
            ((i * 104729) % 1000000) / 100.0,
            timestamptz '2015-01-01 00:00:00+00'
                + ((i * 7907) % 315360000) * interval '1 second'
                + (i % 1000) * interval '1 millisecond',
            CASE WHEN i % 6 = 0 THEN NULL
                 ELSE timestamptz '2015-01-01 00:00:00+00'
                     + ((i * 7907) % 315360000 + (i * 37) % 31536000) * interval '1 second'
                     + (i % 999983) * interval '1 microsecond'
            END,
            CASE i % 13
                WHEN 0 THEN NULL
                WHEN 1 THEN NULL
                WHEN 2 THEN NULL
                WHEN 3 THEN ''
                WHEN 4 THEN 'Prefers email, not phone'
                WHEN 5 THEN 'Said "hello" twice'
                WHEN 6 THEN E'Line one\nLine two'
                WHEN 7 THEN 'Résumé: naïve café, 東京'
                WHEN 8 THEN E'Tab\there, comma, and "quote"'
                WHEN 9 THEN E'Windows line\r\nending'
                WHEN 10 THEN '=SUM(A1:A2)'
                WHEN 11 THEN E'\\.'
                ELSE 'VIP since ' || (2015 + i % 10)
            END
        FROM generate_series($1::bigint, $2::bigint) AS g(i)
        """#
}
