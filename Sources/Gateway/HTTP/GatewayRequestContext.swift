import Hummingbird

/// The request context of every route: Hummingbird's own storage, and who
/// the request acts for (set by `AccessMiddleware`; nil until then).
struct GatewayRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var caller: Caller?

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }
}
