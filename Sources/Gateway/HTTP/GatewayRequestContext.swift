import Hummingbird

/// The request context of every route: Hummingbird's own storage, who the
/// request acts for (set by `AccessMiddleware`; nil until then) and the
/// request id (set by `RequestLogMiddleware`).
struct GatewayRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var caller: Caller?
    var requestID = ""

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
    }
}
