import Foundation

extension URL {
    /// Whether `text` is an absolute `http://` or `https://` URL with a host: what a setting
    /// naming a server (a collector, a webhook) must be.
    public static func isHTTP(_ text: String) -> Bool {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), let host = url.host, !host.isEmpty else {
            return false
        }
        return scheme == "http" || scheme == "https"
    }
}
