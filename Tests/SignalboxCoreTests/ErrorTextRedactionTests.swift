import Testing

@testable import SignalboxCore

@Suite("Upstream error text is redacted before clients see it")
struct ErrorTextRedactionTests {
    @Test(
        "each kind of secret or place is replaced",
        arguments: [
            ("authorization: Bearer sk-abc123def456", "sk-abc123def456"),
            ("\"x-api-key\": \"sk-ant-api03-AbCdEf\"", "sk-ant-api03"),
            ("Incorrect API key provided: sk-proj-**********abcd", "sk-proj"),
            ("key AIzaSyA1234567890abcdefghijklmnop", "AIzaSy"),
            ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJhbGci"),
            ("organization org-AbCdEf123456 is over quota", "org-AbCdEf123456"),
            ("at db-7.internal:5432", "db-7.internal"),
            ("peer 10.1.2.3:9000 closed", "10.1.2.3"),
            ("see https://internal.example.com/trace?id=7", "internal.example.com"),
            ("File \"/srv/app/handlers/chat.py\", line 42", "/srv/app"),
            ("C:\\inetpub\\wwwroot\\app.dll failed", "inetpub"),
            ("Authorization: Token abc123def456ghi", "abc123def456ghi"),
            (#"{\"password\": \"hunter2hunter2\"}"#, "hunter2hunter2"),
            ("refresh_token=AbCdEf0123456789", "AbCdEf0123456789"),
            ("invalid key 3f9a7c2e1b4d5f6a8c9e0d1f2a3b4c5d for this deployment", "3f9a7c2e1b4d5f6a"),
            ("Invalid token hf_AbCdEfGhIjKlMnOpQrStUv", "hf_AbCdEf"),
        ])
    func replaces(text: String, secret: String) {
        let redacted = ErrorTextRedaction.forClients(text)
        #expect(!redacted.contains(secret), "\(redacted)")
        #expect(redacted.contains("[redacted"))
    }

    @Test("what a client needs stays: status words, token counts, times")
    func keepsTheMessage() {
        let text =
            "This model's maximum context length is 128000 tokens; you requested 130000. Retry at 12:30 "
            + "(2024-05-01T12:30:00Z) for user-provided input."
        #expect(ErrorTextRedaction.forClients(text) == text)
        #expect(ErrorTextRedaction.forClients(String(repeating: "a", count: 5000)).count == ErrorTextRedaction.clientLimit + 1)
    }

    @Test("the operator's log keeps places and loses keys")
    func operatorsSeePlaces() {
        let text = "authorization: Bearer sk-abc123def456 at db-7.internal:5432"
        let redacted = ErrorTextRedaction.forOperators(text)
        #expect(!redacted.contains("sk-abc123def456") && redacted.contains("db-7.internal:5432"))
    }
}
