import Console
import Foundation
import Node

extension ConfigFile {
    /// The console's settings from the `console` section, checked at start: a setting that
    /// cannot work stops the node with an error naming its key.
    func consoleSettings(environment: [String: String]) throws -> NodeConfiguration.NodeConsole {
        var settings = NodeConfiguration.NodeConsole()
        // A session secret of its own, shared by the cluster's nodes, instead of one derived from the admin key.
        if let secret = environment["SIGNALBOX_CONSOLE_SECRET"] {
            guard secret.utf8.count >= 32 else { throw ConfigFileError("SIGNALBOX_CONSOLE_SECRET must be at least 32 characters") }
            settings.sessionKey = ConsoleSigner.derivedKey(fromAdminKey: secret)
        }
        guard let section = console else { return settings }
        func positive(_ value: Int?, _ key: String) throws -> Int? {
            guard let value else { return nil }
            guard value > 0 else { throw ConfigFileError("console.\(key) must be a positive number") }
            return value
        }
        if let enabled = section.enabled { settings.enabled = enabled }
        if let idle = try positive(section.sessionIdleSeconds, "session_idle_seconds") {
            // Under two minutes a session could end before its cookie is next refreshed (every minute).
            guard idle >= 120 else { throw ConfigFileError("console.session_idle_seconds must be at least 120") }
            settings.policy.idle = TimeInterval(idle)
        }
        if let lifetime = try positive(section.sessionLifetimeSeconds, "session_lifetime_seconds") {
            settings.policy.lifetime = TimeInterval(lifetime)
        }
        guard settings.policy.idle <= settings.policy.lifetime else {
            throw ConfigFileError("console.session_idle_seconds must not be longer than console.session_lifetime_seconds")
        }
        settings.secureCookies = section.secureCookies
        if let attempts = try positive(section.loginAttempts, "login_attempts") { settings.loginBurst = attempts }
        if let refill = try positive(section.loginRefillSeconds, "login_refill_seconds") { settings.loginRefill = TimeInterval(refill) }
        if let oidc = section.oidc {
            guard let issuer = oidc.issuer, let clientID = oidc.clientID else {
                throw ConfigFileError("console.oidc needs issuer and client_id")
            }
            let secretVariable = oidc.clientSecretEnv ?? "SIGNALBOX_OIDC_CLIENT_SECRET"
            guard let secret = environment[secretVariable], !secret.isEmpty else {
                throw ConfigFileError("console.oidc: the client secret is read from \(secretVariable), which is not set")
            }
            if let redirect = oidc.redirectURL, URL(string: redirect)?.host == nil || !redirect.hasSuffix("/console/oidc/callback") {
                throw ConfigFileError("console.oidc.redirect_url must be a URL ending in /console/oidc/callback")
            }
            var defaults = OIDCSettings(issuer: issuer, clientID: clientID, clientSecret: secret)
            defaults.redirectURL = oidc.redirectURL
            if let scopes = oidc.scopes { defaults.scopes = scopes }
            if let claim = oidc.groupsClaim { defaults.groupsClaim = claim }
            if let name = oidc.displayName { defaults.displayName = name }
            if let problem = defaults.problem { throw ConfigFileError(problem) }
            settings.oidc = defaults
        }
        return settings
    }
}
