import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import SignalboxCore

extension APIError: HTTPResponseError {
    public var status: HTTPResponse.Status { .init(code: statusCode) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        jsonResponse()
    }

    func jsonResponse() -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        for (name, value) in self.headers {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        return Response(
            status: .init(code: statusCode), headers: headers,
            body: .init(byteBuffer: ByteBuffer(bytes: JSONWriter.bytes(body))))
    }
}

/// Builds JSON responses from `JSONValue`s.
enum JSONResponse {
    static func make(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: JSONWriter.bytes(value))))
    }
}

/// Turns every failure into an OpenAI-style JSON error: thrown `APIError`s as they are, invalid
/// request bodies as 400s, Hummingbird's own errors (404, 405, 413, …) with their status, anything
/// else as a 500 that never leaks internals. A 404 on a path the router serves for other methods
/// is a 405 with `Allow`.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            var apiError = Self.apiError(for: error, request: request, context: context)
            if apiError.statusCode == 404, error is HTTPError, let allowed = routes.allowedMethods(for: request.uri.path) {
                apiError = APIError(status: 405, message: "Method \(request.method) is not allowed on \(request.uri.path)")
                apiError.headers = [("Allow", allowed.map(\.rawValue).sorted().joined(separator: ", "))]
            }
            return apiError.jsonResponse()
        }
    }

    /// The router error any thrown error stands for, whatever shape a surface then gives it.
    static func apiError(for error: any Error, request: Request, context: Context) -> APIError {
        switch error {
        case let error as APIError: return error
        case let error as InvalidRequest: return APIError.badRequest(error.message)
        case let error as HTTPError:
            let message: String =
                switch error.status.code {
                case 404: "Not found: \(request.method) \(request.uri.path)"
                case 413: "Request body is too large"
                default: error.body ?? error.status.reasonPhrase
                }
            return APIError(status: error.status.code, message: message)
        case let error as any HTTPResponseError:
            return APIError(status: error.status.code, message: error.status.reasonPhrase)
        case HTTPParserError.invalidEOFState:
            // The client went away in the middle of its body: nobody is left to answer.
            context.logger.debug("client closed the connection before its request ended")
            return APIError(status: 400, message: "The request ended before its body was complete")
        case let error as HTTPParserError:
            // Bad framing (a chunk size that is not hex, a negative one, a broken header): the client's fault.
            context.logger.debug("malformed request framing", metadata: ["error": "\(error)"])
            return APIError.badRequest("Malformed HTTP request: \(error)")
        case let error as ChannelError where error == .ioOnClosedChannel || error == .alreadyClosed || error == .eof:
            context.logger.debug("client connection closed", metadata: ["error": "\(error)"])
            return APIError(status: 400, message: "The connection closed before the request was read")
        default:
            context.logger.error("unhandled error", metadata: ["error": "\(error)"])
            return APIError.internalError()
        }
    }
}

/// The paths a router serves and the methods of each, read from the router itself.
struct RouteTable: Sendable {
    let routes: [(path: RouterPath, methods: Set<HTTPRequest.Method>)]

    /// The routes `register` adds to a router.
    init<Context>(of register: (Router<Context>) -> Void) {
        let router = Router(context: Context.self)
        register(router)
        self.init(router)
    }

    init<Context>(_ router: Router<Context>) {
        var methods: [String: (path: RouterPath, methods: Set<HTTPRequest.Method>)] = [:]
        for route in router.routes {
            methods[route.path.description, default: (route.path, [])].methods.insert(route.method)
        }
        routes = methods.values.sorted { $0.path.description < $1.path.description }
    }

    /// The methods served on `path`, or nil when no route has that path.
    func allowedMethods(for path: String) -> Set<HTTPRequest.Method>? {
        let parts = path.split(separator: "/")
        let matching = routes.filter { route in
            route.path.components.count == parts.count
                && zip(route.path.components, parts).allSatisfy { element, part in element ~= part }
        }
        return matching.isEmpty ? nil : matching.reduce(into: []) { $0.formUnion($1.methods) }
    }
}

extension APIError {
    /// A request the node cannot prove the account can pay for, because the ledger does not answer.
    static var ledgerUnavailable: APIError {
        APIError(
            status: 503,
            message: "The credit ledger cannot be reached, so this node cannot confirm the account can pay "
                + "for this request. Retry shortly.", metadata: ["reason": "ledger_unavailable"])
    }
}
