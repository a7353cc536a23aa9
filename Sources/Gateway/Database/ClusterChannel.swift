/// The channels on which gateways tell each other, by `NOTIFY`, what changed
/// in the journal: the one place their names are spelled. The journal sends
/// on them (`ExportJournal.notify`), `ClusterListener` listens on all of
/// them, and the manager (`ExportManager.noticed`) acts on what arrives.
enum ClusterChannel: String, CaseIterable, Sendable {
    /// Work to claim: a run was queued (no payload).
    case queue = "gateway_queue"
    /// A run's state changed; payload: its id, in lower case.
    case runs = "gateway_runs"
    /// An export was cancelled or deleted; payload: its id, in lower case.
    case exports = "gateway_exports"
}
