import Foundation

/// Who a request acts for, once `AccessMiddleware` has let it through, and
/// which exports it may see. An export another caller cannot see is, for
/// it, an export that does not exist (404), never a 403 that would confirm it.
enum Caller: Sendable, Equatable {
    /// No tokens are configured (loopback, or ALLOW_ANONYMOUS): every export.
    case open
    /// A request with a known API token: the exports made with that token.
    case token(id: String)
    /// A valid signed download link: that one export, and only its download.
    case link(exportID: UUID)

    /// What a new export records as its owner: the token's id (nil when open).
    var owner: String? {
        switch self {
        case .open, .link: nil
        case .token(let id): id
        }
    }

    func sees(exportID: UUID, owner: String?) -> Bool {
        switch self {
        case .open: true
        case .token(let id): owner == id
        case .link(let linked): linked == exportID
        }
    }
}
