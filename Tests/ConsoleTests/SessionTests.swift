import Crypto
import Foundation
import Gateway
import Ledger
import SignalboxCore
import Testing

@testable import Console

/// Sessions, CSRF tokens and the sign-in throttle: pure, so the clock is the test's.
@Suite struct SessionTests {
    let signer = ConsoleSigner(key: SymmetricKey(size: .bits256), policy: SessionPolicy(idle: 1800, lifetime: 43200))
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    func session(at date: Date) -> ConsoleSession {
        let seconds = Int64(date.timeIntervalSince1970)
        return ConsoleSession(
            id: "sid", actor: "key:key-1", displayName: "ops", role: .billing, keyHash: "h", issuedAt: seconds, lastSeen: seconds)
    }

    @Test func aSessionLastsUntilItsIdleOrAbsoluteExpiry() {
        let cookie = signer.sessionCookie(session(at: start))
        #expect(signer.check(sessionCookie: cookie, now: start.addingTimeInterval(10)) == .valid(session(at: start), refresh: false))
        guard case .valid(_, let refresh) = signer.check(sessionCookie: cookie, now: start.addingTimeInterval(120)) else {
            Issue.record("a session used after two minutes is still valid")
            return
        }
        #expect(refresh, "its cookie is written again with a later lastSeen")
        #expect(signer.check(sessionCookie: cookie, now: start.addingTimeInterval(1801)) == .expired, "idle too long")
        var busy = session(at: start)
        busy.lastSeen = Int64(start.addingTimeInterval(43_000).timeIntervalSince1970)
        #expect(signer.check(sessionCookie: signer.sessionCookie(busy), now: start.addingTimeInterval(43_100)) != .expired)
        #expect(
            signer.check(sessionCookie: signer.sessionCookie(busy), now: start.addingTimeInterval(43_201)) == .expired, "absolute lifetime")
    }

    @Test func aTamperedForgedOrRepurposedCookieIsRefused() throws {
        let cookie = signer.sessionCookie(session(at: start))
        let parts = cookie.split(separator: ".").map(String.init)
        // Promote the role in the payload, keep the signature.
        var forged = session(at: start)
        forged.role = .admin
        let forgedPayload = Base64URL.encode(try JSONEncoder().encode(forged))
        #expect(signer.check(sessionCookie: forgedPayload + "." + parts[1], now: start) == .invalid)
        let other = ConsoleSigner(key: SymmetricKey(size: .bits256))
        #expect(signer.check(sessionCookie: other.sessionCookie(session(at: start)), now: start) == .invalid, "another cluster's key")
        // A value signed for another purpose (a flash message, the login nonce) is not a session.
        #expect(signer.check(sessionCookie: signer.seal(session(at: start), purpose: "flash"), now: start) == .invalid)
        #expect(signer.check(sessionCookie: "", now: start) == .invalid)
        #expect(signer.check(sessionCookie: String(repeating: "a", count: 5000), now: start) == .invalid)
        let future = signer.sessionCookie(session(at: start.addingTimeInterval(3600)))
        #expect(signer.check(sessionCookie: future, now: start) == .invalid, "a session from the future")
    }

    @Test func csrfTokensBelongToOneSession() {
        let token = signer.csrfToken(sessionID: "a")
        #expect(signer.verifyCSRF(token, sessionID: "a"))
        #expect(!signer.verifyCSRF(token, sessionID: "b"))
        #expect(!signer.verifyCSRF(nil, sessionID: "a"))
        #expect(!signer.verifyCSRF("", sessionID: "a"))
    }

    @Test func everyNodeDerivesTheSameKeyFromTheAdminKey() {
        let one = ConsoleSigner(key: ConsoleSigner.derivedKey(fromAdminKey: "sk-sb-v1-abcdefghijklmnopqrstuvwxyz"))
        let two = ConsoleSigner(key: ConsoleSigner.derivedKey(fromAdminKey: "sk-sb-v1-abcdefghijklmnopqrstuvwxyz"))
        let rotated = ConsoleSigner(key: ConsoleSigner.derivedKey(fromAdminKey: "sk-sb-v1-zyxwvutsrqponmlkjihgfedcba"))
        let cookie = one.sessionCookie(session(at: start))
        #expect(two.check(sessionCookie: cookie, now: start) != .invalid)
        #expect(rotated.check(sessionCookie: cookie, now: start) == .invalid, "rotating the admin key signs everyone out")
    }

    @Test func signInAttemptsAreThrottledPerAddressAndTheTableStaysBounded() {
        var throttle = LoginThrottle(burst: 3, refill: 30, capacity: 100)
        for _ in 0..<3 { #expect(throttle.take(address: "10.0.0.1", now: start).allowed) }
        let refused = throttle.take(address: "10.0.0.1", now: start)
        #expect(!refused.allowed && refused.retryAfter == 30)
        #expect(throttle.take(address: "10.0.0.2", now: start).allowed, "another address has its own bucket")
        #expect(throttle.take(address: "10.0.0.1", now: start.addingTimeInterval(31)).allowed, "one attempt back after the refill")
        for n in 0..<1000 { _ = throttle.take(address: "192.0.2.\(n)", now: start.addingTimeInterval(Double(n))) }
        #expect(throttle.trackedAddresses <= 100)
    }

    @Test func singleSignOnUsersGetTheMostPowerfulMappedRole() {
        let mappings = [
            RoleMapping(claim: .group, value: "finance", role: .billing), RoleMapping(claim: .group, value: "sre", role: .admin),
            RoleMapping(claim: .emailDomain, value: "example.com", role: .auditor),
        ]
        func user(_ groups: [String], email: String? = nil, verified: Bool = true) -> OIDCIdentity {
            OIDCIdentity(issuer: "https://idp", subject: "u", email: email, emailVerified: verified, name: nil, groups: groups)
        }
        #expect(user(["finance"]).role(from: mappings) == .billing)
        #expect(user(["finance", "sre"]).role(from: mappings) == .admin)
        #expect(user([], email: "a@Example.com").role(from: mappings) == .auditor)
        #expect(user([], email: "a@example.com", verified: false).role(from: mappings) == nil, "an unverified email maps to nothing")
        #expect(user(["Finance"]).role(from: mappings) == nil, "groups match exactly")
        #expect(user([]).role(from: mappings) == nil)
    }

    @Test func chartsEscapeEveryLabel() {
        let svg = SVGChart.bars(
            [ChartPoint(label: "<img src=x onerror=alert(1)>", value: 2, valueText: "<b>", display: "\"$2\" & more")], title: "<script>")
        #expect(!svg.contains("<img") && !svg.contains("<script>") && !svg.contains("<b>"))
        #expect(svg.contains("&lt;img src=x onerror=alert(1)&gt;") && svg.contains("&quot;$2&quot; &amp; more"))
        #expect(SVGChart.bars([], title: "empty").contains("Nothing in this period"))
    }

    @Test func theRequestTallyKeepsAWeekByMinuteAndForgetsOlderMinutes() {
        final class Clock: @unchecked Sendable { var now = Date(timeIntervalSince1970: 1_800_000_000) }
        let clock = Clock()
        var tally = RequestTally(clock: { clock.now })
        tally.request(failed: false)
        tally.request(failed: true)
        tally.failover()
        tally.firstToken(milliseconds: 300)
        tally.firstToken(milliseconds: 100)
        #expect(tally.total(minutes: 60).requests == 2 && tally.total(minutes: 60).failed == 1)
        #expect(tally.total(minutes: 60).meanFirstTokenMillis == 200)
        clock.now = clock.now.addingTimeInterval(3 * 3600)
        tally.request(failed: false)
        #expect(tally.total(minutes: 60).requests == 1)
        #expect(tally.total(minutes: 1440).requests == 3)
        #expect(tally.series(count: 24, width: 60).map(\.requests).reduce(0, +) == 3)
        clock.now = clock.now.addingTimeInterval(8 * 86400)
        #expect(tally.total(minutes: RequestTally.minutes).requests == 0, "a week later the old minutes are stale, not counted again")
    }
}

/// What the console reads from forms and writes into pages and exports, at the edges of text.
@Suite struct ConsoleTextTests {
    @Test func formsAreParsedByHandAndMalformedEscapesAreRefused() {
        #expect(ConsolePages.parseForm("a=1&b=two+words&c=%C3%A9t%C3%A9&a=ignored") == ["a": "1", "b": "two words", "c": "été"])
        #expect(ConsolePages.parseForm("name=a b#c\"<é>&empty=&flag") == ["name": "a b#c\"<é>", "empty": "", "flag": ""])
        #expect(ConsolePages.parseForm("") == [:])
        for malformed in ["a=%", "a=%zz", "a=%C3", "%=1"] { #expect(ConsolePages.parseForm(malformed) == nil, "\(malformed)") }
    }

    @Test func aQuoteWithACombiningMarkIsStillEscaped() throws {
        let sneaky = "x\"\u{301} onfocus=alert(1) autofocus \"\u{301}"
        #expect(!HTML.escape(sneaky).contains("\""))
        let library = try ConsoleTemplates.library()
        let page: [String: Any] = [
            "title": "t", "heading": "h", "text": "t", "link": ["href": "/console/", "label": SafeText.deep(sneaky)],
        ]
        let html = try #require(library.render(page, withTemplate: "message"))
        let attack = "\"\u{301} onfocus"
        let reached = html.contains(attack)
        #expect(!reached, "the quote reached the page unescaped")
        #expect(html.contains("&quot;"))
        #expect(EntryFormat.csvField("line one\r\nline two") == "\"line one\r\nline two\"")
    }

    @Test func unknownStoredRolesGrantTheLeast() {
        #expect(AdminRole.stored(isAdmin: true, nil) == .admin)
        #expect(AdminRole.stored(isAdmin: true, "billing") == .billing)
        #expect(AdminRole.stored(isAdmin: true, "superuser") == .auditor)
        #expect(AdminRole.stored(isAdmin: false, "admin") == nil)
    }

    @Test func aSingleSignOnSessionsRoleFollowsTheMappingsAsTheyAreNow() {
        let identity = OIDCIdentity(
            issuer: "https://idp", subject: "u", email: "u@example.com", emailVerified: true, name: nil,
            groups: (0..<500).map { "group-\($0)" })
        let mappings = [RoleMapping(claim: .group, value: "group-7", role: .billing)]
        var session = ConsoleSession(
            id: "s", actor: identity.actor, displayName: "u", role: .billing, keyHash: nil, issuedAt: 0, lastSeen: 0)
        session.claims = identity.mappedClaims(from: mappings)
        #expect(session.claims == ["group:group-7"], "only what a mapping uses is kept: the cookie stays small")
        #expect(session.roleFromClaims(mappings) == .billing)
        #expect(session.roleFromClaims([RoleMapping(claim: .group, value: "group-7", role: .auditor)]) == .auditor)
        #expect(session.roleFromClaims([]) == nil, "a removed mapping ends the session")
        let noAt = OIDCIdentity(issuer: "i", subject: "s", email: "example.com", emailVerified: true, name: nil, groups: [])
        #expect(noAt.role(from: [RoleMapping(claim: .emailDomain, value: "example.com", role: .admin)]) == nil)
    }
}
