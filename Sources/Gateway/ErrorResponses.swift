import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
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

/// Turns every failure into an OpenAI-style JSON error: thrown `APIError`s as they are,
/// Hummingbird's own errors (404, 405, 413, …) with their status, anything else as a 500
/// that never leaks internals.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Paths the router serves, with their methods, to tell 404 from 405.
    let knownRoutes: [(pattern: [Substring], methods: Set<HTTPRequest.Method>)]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return error.jsonResponse()
        } catch let error as HTTPError {
            if error.status == .notFound, let allowed = allowedMethods(for: request.uri.path), !allowed.isEmpty {
                var apiError = APIError(status: 405, message: "Method \(request.method) is not allowed on \(request.uri.path)")
                apiError.headers = [("Allow", allowed.map(\.rawValue).sorted().joined(separator: ", "))]
                return apiError.jsonResponse()
            }
            let message: String =
                switch error.status.code {
                case 404: "Not found: \(request.method) \(request.uri.path)"
                case 413: "Request body is too large"
                default: error.body ?? error.status.reasonPhrase
                }
            return APIError(status: error.status.code, message: message).jsonResponse()
        } catch let error as any HTTPResponseError {
            return APIError(status: error.status.code, message: error.status.reasonPhrase).jsonResponse()
        } catch {
            context.logger.error("unhandled error", metadata: ["error": "\(error)"])
            return APIError.internalError().jsonResponse()
        }
    }

    func allowedMethods(for path: String) -> Set<HTTPRequest.Method>? {
        let parts = path.split(separator: "/")
        for route in knownRoutes where route.pattern.count == parts.count {
            let matches = zip(route.pattern, parts).allSatisfy { pattern, part in pattern.hasPrefix(":") || pattern == part }
            if matches { return route.methods }
        }
        return nil
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
