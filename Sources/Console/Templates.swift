import Mustache

/// The console's Mustache templates, compiled into the executable. Every page is a child of
/// `layout`. `{{name}}` escapes HTML; the only unescaped values (`{{{…}}}`) are SVG charts, which
/// `SVGChart` builds and escapes itself.
enum ConsoleTemplates {
    static func library() throws -> MustacheLibrary {
        var library = MustacheLibrary()
        for (name, text) in all { try library.register(text, named: name) }
        return library
    }

    static let all: [(String, String)] = [
        ("layout", layout), ("login", login), ("overview", overview), ("accounts", accounts), ("account", account),
        ("purchase-confirm", purchaseConfirm), ("keys", keys), ("key-created", keyCreated), ("ledger", ledger),
        ("generation", generation), ("spend", spend), ("cluster", cluster), ("audit", audit), ("access", access),
        ("message", message), ("redirect", redirect),
    ]

    static let layout = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · Signalbox console</title>
        <link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml">
        <link rel="stylesheet" href="/console/assets/console.css">
        <script src="/console/assets/console.js" defer></script></head>
        <body>
        {{#user}}
        <header class="top"><a class="brand" href="/console/">Signalbox</a>
        <nav aria-label="Console">
        {{#nav}}<a href="{{href}}"{{#current}} aria-current="page"{{/current}}>{{label}}</a>{{/nav}}
        </nav>
        <div class="who"><span>{{name}} · <span class="pill">{{role}}</span></span>
        <form method="post" action="/console/logout"><input type="hidden" name="csrf_token" value="{{csrf}}"><button class="secondary" type="submit">Sign out</button></form></div>
        </header>
        {{/user}}
        <main>
        {{#flash}}<div class="flash" role="status">{{.}}</div>{{/flash}}
        {{#flashError}}<div class="flash error" role="alert">{{.}}</div>{{/flashError}}
        {{$content}}{{/content}}
        </main></body></html>
        """

    static let login = """
        {{<layout}}{{$content}}
        <div class="login card">
        <h1>Sign in to the Signalbox console</h1>
        <form class="stack" method="post" action="/console/login">
        <input type="hidden" name="csrf_token" value="{{loginCSRF}}">
        <input type="hidden" name="next" value="{{next}}">
        <label for="admin_key">Admin key</label>
        <input id="admin_key" name="admin_key" type="password" autocomplete="current-password" required size="40">
        {{#errors.admin_key}}<p class="field-error" id="admin_key-error">{{.}}</p>{{/errors.admin_key}}
        <p class="muted">The operator key is in <code>.signalbox/admin-key</code> on the embedded default.</p>
        <button type="submit">Sign in</button>
        </form>
        {{#oidc}}<p class="or">or</p><p><a class="button secondary" href="/console/login/oidc?next={{nextQuery}}">Sign in with {{name}}</a></p>{{/oidc}}
        </div>
        {{/content}}{{/layout}}
        """

    static let overview = """
        {{<layout}}{{$content}}
        <h1>Overview</h1>
        <form class="filters" method="get" action="/console/">
        <label>Period <select name="period">{{#periods}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/periods}}</select></label>
        <button class="secondary" type="submit">Show</button></form>
        <div class="grid">
        <div class="card"><div class="muted">Requests (this node)</div><div class="stat" id="stat-requests">{{requests}}</div></div>
        <div class="card"><div class="muted">Spend (ledger)</div><div class="stat" id="stat-spend">${{spend}}</div><div class="muted">{{charged}} charged requests</div></div>
        <div class="card"><div class="muted">Errors / failovers (this node)</div><div class="stat">{{errorRate}} / {{failoverRate}}</div></div>
        <div class="card"><div class="muted">Mean time to first token (this node)</div><div class="stat">{{firstToken}}</div></div>
        </div>
        <div class="card"><h2>Spend</h2>{{{spendChart}}}</div>
        <div class="card"><h2>Requests on this node</h2>{{{requestChart}}}</div>
        <div class="grid">
        {{#tops}}<div class="card"><h2>Top {{label}}</h2><div class="table-wrap"><table><thead><tr><th>{{label}}</th><th class="num">Spend</th><th class="num">Requests</th></tr></thead><tbody>
        {{#rows}}<tr><td class="mono">{{group}}</td><td class="num">${{amount}}</td><td class="num">{{requests}}</td></tr>{{/rows}}
        {{^rows}}<tr><td colspan="3" class="muted">Nothing yet</td></tr>{{/rows}}
        </tbody></table></div></div>{{/tops}}
        </div>
        {{/content}}{{/layout}}
        """

    static let accounts = """
        {{<layout}}{{$content}}
        <h1>Accounts</h1>
        <form class="filters" method="get" action="/console/accounts"><label>Search <input name="search" value="{{search}}" placeholder="id or name"></label><button class="secondary" type="submit">Search</button></form>
        <div class="table-wrap"><table id="accounts"><thead><tr><th>Account</th><th>Name</th><th class="num">Balance</th><th class="num">Held</th><th class="num">Available</th><th class="num">Open leases</th><th>Region</th></tr></thead><tbody>
        {{#rows}}<tr><td class="mono"><a href="/console/accounts/{{id}}">{{id}}</a></td><td>{{name}}</td><td class="num">${{balance}}</td><td class="num">${{held}}</td><td class="num">${{available}}</td><td class="num">{{leases}}</td><td>{{region}}</td></tr>{{/rows}}
        {{^rows}}<tr><td colspan="7" class="muted">No accounts match.</td></tr>{{/rows}}
        </tbody></table></div>
        <div class="pager">{{#next}}<a href="/console/accounts?search={{search}}&amp;after={{next}}">Next page →</a>{{/next}}</div>
        {{#canBilling}}
        <div class="card"><h2>Create an account</h2>
        <form class="stack" method="post" action="/console/accounts"><input type="hidden" name="csrf_token" value="{{csrf}}">
        <label for="name">Name</label><input id="name" name="name" value="{{values.name}}" required>
        {{#errors.name}}<p class="field-error">{{.}}</p>{{/errors.name}}
        <label for="id">Id (optional)</label><input id="id" name="id" value="{{values.id}}" placeholder="acct-…">
        {{#errors.id}}<p class="field-error">{{.}}</p>{{/errors.id}}
        <label for="region">Pinned region (optional)</label><input id="region" name="region" value="{{values.region}}">
        {{#errors.region}}<p class="field-error">{{.}}</p>{{/errors.region}}
        <p><button type="submit">Create account</button></p></form></div>
        {{/canBilling}}
        {{/content}}{{/layout}}
        """

    static let account = """
        {{<layout}}{{$content}}
        <h1>Account <span class="mono">{{account.id}}</span></h1>
        <div class="grid">
        <div class="card"><div class="muted">Name</div><div>{{account.name}}</div></div>
        <div class="card"><div class="muted">Balance</div><div class="stat" id="balance">${{account.balance}}</div><div class="muted">held ${{account.held}} · available ${{account.available}}</div></div>
        <div class="card"><div class="muted">Pinned region</div><div>{{account.region}}{{^account.region}}none{{/account.region}}</div></div>
        </div>
        <p><a href="/console/keys?account={{account.id}}">Keys of this account</a> · <a href="/console/ledger?account={{account.id}}">Ledger entries</a> · <a href="/console/spend?account={{account.id}}&amp;by=model">Spend</a></p>
        {{#canBilling}}
        <div class="grid">
        <div class="card"><h2>Purchase credit</h2>
        <form class="stack" method="post" action="/console/accounts/{{account.id}}/purchase"><input type="hidden" name="csrf_token" value="{{csrf}}">
        <label for="purchase-amount">Credit (USD)</label><input id="purchase-amount" name="amount" inputmode="decimal" value="{{values.amount}}" data-fee-preview="fee-preview" required>
        {{#errors.amount}}<p class="field-error">{{.}}</p>{{/errors.amount}}
        <p class="muted" id="fee-preview"></p>
        <label for="purchase-reference">Payment reference (optional)</label><input id="purchase-reference" name="reference" value="{{values.reference}}">
        {{#errors.reference}}<p class="field-error">{{.}}</p>{{/errors.reference}}
        <p><button type="submit">Review purchase</button></p></form></div>
        <div class="card"><h2>Grant credit</h2>
        <form class="stack" method="post" action="/console/accounts/{{account.id}}/grant"><input type="hidden" name="csrf_token" value="{{csrf}}">
        <label for="grant-amount">Credit (USD, no fee)</label><input id="grant-amount" name="amount" inputmode="decimal" required>
        {{#errors.grant_amount}}<p class="field-error">{{.}}</p>{{/errors.grant_amount}}
        <label for="grant-reference">Reference (a second grant with the same reference records nothing)</label><input id="grant-reference" name="reference" value="{{grantReference}}">
        <p><button type="submit">Grant</button></p></form></div>
        <div class="card"><h2>Pin to a region</h2>
        <form class="stack" method="post" action="/console/accounts/{{account.id}}/region"><input type="hidden" name="csrf_token" value="{{csrf}}">
        <label for="pin-region">Region (empty to unpin)</label><input id="pin-region" name="region" value="{{account.region}}">
        {{#errors.region}}<p class="field-error">{{.}}</p>{{/errors.region}}
        <p><button type="submit">Save region</button></p></form></div>
        </div>
        {{/canBilling}}
        {{/content}}{{/layout}}
        """

    static let purchaseConfirm = """
        {{<layout}}{{$content}}
        <h1>Confirm the purchase</h1>
        <div class="card">
        <table><tbody>
        <tr><th>Account</th><td class="mono">{{account}}</td></tr>
        <tr><th>Credit</th><td class="num" id="confirm-credit">${{credit}}</td></tr>
        <tr><th>Platform fee (5.5%, $0.80 minimum)</th><td class="num" id="confirm-fee">${{fee}}</td></tr>
        <tr><th>The buyer pays</th><td class="num" id="confirm-total">${{total}}</td></tr>
        <tr><th>Reference</th><td class="mono">{{reference}}</td></tr>
        </tbody></table>
        <form method="post" action="/console/accounts/{{account}}/purchase"><input type="hidden" name="csrf_token" value="{{csrf}}">
        <input type="hidden" name="amount" value="{{credit}}"><input type="hidden" name="reference" value="{{reference}}"><input type="hidden" name="confirm" value="1">
        <p><button type="submit" id="confirm-purchase">Record purchase</button> <a href="/console/accounts/{{account}}">Cancel</a></p></form>
        </div>
        {{/content}}{{/layout}}
        """

    static let keys = """
        {{<layout}}{{$content}}
        <h1>Keys</h1>
        <form class="filters" method="get" action="/console/keys"><label>Account <input name="account" value="{{account}}" required></label><button class="secondary" type="submit">Show keys</button></form>
        {{#account}}
        <div class="table-wrap"><table id="keys"><thead><tr><th>Key</th><th>Name</th><th>Label</th><th>Role</th><th>Limit</th><th class="num">Spent in window</th><th>Region</th><th>State</th>{{#canBilling}}<th>Change</th>{{/canBilling}}</tr></thead><tbody>
        {{#rows}}<tr><td class="mono">{{id}}</td><td>{{name}}</td><td class="mono">{{label}}</td><td>{{role}}</td><td>{{#limit}}${{limit}} {{reset}}{{/limit}}{{^limit}}none{{/limit}}</td><td class="num">${{spent}}</td><td>{{region}}</td>
        <td>{{#disabled}}<span class="pill revoked">revoked</span>{{/disabled}}{{^disabled}}<span class="pill ok">active</span>{{/disabled}}</td>
        {{#canBilling}}<td>
        <details><summary>Edit</summary>
        <form class="stack" method="post" action="/console/keys/{{hash}}"><input type="hidden" name="csrf_token" value="{{csrf}}"><input type="hidden" name="account" value="{{account}}">
        <label>Limit (USD, empty for none)<input name="limit" value="{{limit}}" inputmode="decimal"></label>
        <label>Window <select name="limit_reset"><option value="">all time</option>{{#windows}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/windows}}</select></label>
        <label>Region (empty for the account's)<input name="region" value="{{region}}"></label>
        <button type="submit">Save</button></form>
        {{^disabled}}<form method="post" action="/console/keys/{{hash}}/revoke"><input type="hidden" name="csrf_token" value="{{csrf}}"><input type="hidden" name="account" value="{{account}}"><button class="danger" type="submit">Revoke</button></form>{{/disabled}}
        </details></td>{{/canBilling}}
        </tr>{{/rows}}
        {{^rows}}<tr><td colspan="9" class="muted">This account has no keys.</td></tr>{{/rows}}
        </tbody></table></div>
        {{#canBilling}}
        <div class="card"><h2>Create a key</h2>
        <form class="stack" method="post" action="/console/keys"><input type="hidden" name="csrf_token" value="{{csrf}}"><input type="hidden" name="account" value="{{account}}">
        <label for="key-name">Name</label><input id="key-name" name="name" value="{{values.name}}" required>
        {{#errors.name}}<p class="field-error">{{.}}</p>{{/errors.name}}
        <label for="key-limit">Spending limit (USD, optional)</label><input id="key-limit" name="limit" inputmode="decimal" value="{{values.limit}}">
        {{#errors.limit}}<p class="field-error">{{.}}</p>{{/errors.limit}}
        <label for="key-reset">Limit window</label><select id="key-reset" name="limit_reset"><option value="">all time</option><option value="daily">daily</option><option value="weekly">weekly</option><option value="monthly">monthly</option></select>
        <label for="key-region">Region (optional)</label><input id="key-region" name="region" value="{{values.region}}">
        {{#errors.region}}<p class="field-error">{{.}}</p>{{/errors.region}}
        {{#canOperate}}<label for="key-role">Operator role (makes an admin key on the operator account)</label>
        <select id="key-role" name="role"><option value="">none: a customer key</option><option value="admin">admin</option><option value="billing">billing</option><option value="auditor">auditor</option></select>{{/canOperate}}
        <p><button type="submit">Create key</button></p></form></div>
        {{/canBilling}}
        {{/account}}
        {{/content}}{{/layout}}
        """

    static let keyCreated = """
        {{<layout}}{{$content}}
        <h1>Key created</h1>
        <div class="card">
        <p>This is the only time the key is shown. Store it now.</p>
        <p class="secret"><code id="new-key">{{secret}}</code></p>
        <p><button type="button" class="secondary" data-copy="new-key">Copy</button></p>
        <p class="muted">Id <span class="mono">{{id}}</span> · label <span class="mono">{{label}}</span>{{#role}} · role {{role}}{{/role}}</p>
        <p><a href="/console/keys?account={{account}}">Back to the keys of {{account}}</a></p>
        </div>
        {{/content}}{{/layout}}
        """

    static let ledger = """
        {{<layout}}{{$content}}
        <h1>Ledger</h1>
        <form class="filters" method="get" action="/console/ledger">
        <label>Account <input name="account" value="{{filters.account}}"></label>
        <label>Key <input name="key" value="{{filters.key}}"></label>
        <label>Model <input name="model" value="{{filters.model}}"></label>
        <label>Provider <input name="provider" value="{{filters.provider}}"></label>
        <label>Kind <select name="kind"><option value="">any</option>{{#kinds}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/kinds}}</select></label>
        <label>Since <input name="since" value="{{filters.since}}" placeholder="2026-11-25"></label>
        <label>Until <input name="until" value="{{filters.until}}" placeholder="2026-12-01"></label>
        <button type="submit" class="secondary">Filter</button>
        <a class="button secondary" id="export-csv" href="/console/ledger/export.csv?{{query}}">Export CSV</a>
        </form>
        {{#errors.filters}}<p class="field-error">{{.}}</p>{{/errors.filters}}
        <div class="table-wrap"><table id="entries"><thead><tr><th>Id</th><th>Time (UTC)</th><th>Kind</th><th>From</th><th>To</th><th class="num">Amount</th><th>Model</th><th>Key</th><th>Generation</th><th>Memo</th>{{#canBilling}}<th></th>{{/canBilling}}</tr></thead><tbody>
        {{#rows}}<tr><td class="num">{{id}}</td><td class="mono">{{time}}</td><td>{{kind}}</td><td class="mono">{{debit}}</td><td class="mono">{{credit}}</td><td class="num">${{amount}}</td><td class="mono">{{model}}</td><td class="mono">{{key}}</td>
        <td class="mono">{{#generation}}<a href="/console/generations/{{generation}}">{{generation}}</a>{{/generation}}</td><td>{{memo}}</td>
        {{#canBilling}}<td>{{#reversible}}<details><summary>Reverse</summary><form class="stack" method="post" action="/console/ledger/{{id}}/reverse"><input type="hidden" name="csrf_token" value="{{csrf}}"><label>Reason<input name="reason" required></label><button class="danger" type="submit">Post reversal</button></form></details>{{/reversible}}</td>{{/canBilling}}
        </tr>{{/rows}}
        {{^rows}}<tr><td colspan="11" class="muted">No entries match.</td></tr>{{/rows}}
        </tbody></table></div>
        <div class="pager">{{#next}}<a id="next-page" href="/console/ledger?{{query}}&amp;before={{next}}">Older entries →</a>{{/next}}</div>
        <p class="muted">{{pageSize}} entries a page, newest first.</p>
        {{/content}}{{/layout}}
        """

    static let generation = """
        {{<layout}}{{$content}}
        <h1>Generation <span class="mono">{{id}}</span></h1>
        <div class="grid">
        <div class="card"><div class="muted">Model</div><div class="mono">{{model}}</div><div class="muted">served by {{provider}}</div></div>
        <div class="card"><div class="muted">Cost to the account</div><div class="stat" id="generation-cost">${{cost}}</div></div>
        <div class="card"><div class="muted">Tokens</div><div>{{prompt}} in · {{completion}} out{{#reasoning}} · {{reasoning}} reasoning{{/reasoning}}{{#cached}} · {{cached}} cached{{/cached}}</div></div>
        <div class="card"><div class="muted">Latency</div><div>{{latency}} ms to first token · {{generationTime}} ms in all</div><div class="muted">{{#streamed}}streamed{{/streamed}}{{#cancelled}} · cancelled by the client{{/cancelled}} · finish {{finish}}</div></div>
        </div>
        <p class="muted">Account <a class="mono" href="/console/accounts/{{account}}">{{account}}</a> · key <span class="mono">{{key}}</span> · {{time}} UTC</p>
        <h2>Attempts</h2>
        <div class="table-wrap"><table id="attempts"><thead><tr><th>#</th><th>Provider</th><th>Model</th><th>Status</th><th class="num">Latency</th><th class="num">Provider cost</th><th>Error</th></tr></thead><tbody>
        {{#attempts}}<tr><td class="num">{{number}}</td><td>{{providerName}} <span class="mono">{{provider}}</span></td><td class="mono">{{model}}</td><td><span class="pill {{statusClass}}">{{status}}</span></td><td class="num">{{latency}} ms</td><td class="num">${{providerCost}}</td><td>{{error}}</td></tr>{{/attempts}}
        </tbody></table></div>
        <h2>Ledger entries</h2>
        <p><a href="/console/ledger?generation={{id}}">Entries of this generation</a></p>
        {{/content}}{{/layout}}
        """

    static let spend = """
        {{<layout}}{{$content}}
        <h1>Spend</h1>
        <form class="filters" method="get" action="/console/spend">
        <label>By <select name="by">{{#groupings}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/groupings}}</select></label>
        <label>Account <input name="account" value="{{filters.account}}"></label>
        <label>Since <input name="since" value="{{filters.since}}" placeholder="2026-11-01"></label>
        <label>Until <input name="until" value="{{filters.until}}"></label>
        <button type="submit" class="secondary">Show</button></form>
        {{#errors.filters}}<p class="field-error">{{.}}</p>{{/errors.filters}}
        <div class="card">{{{chart}}}</div>
        <div class="table-wrap"><table id="spend"><thead><tr><th>{{by}}</th><th class="num">Spend</th><th class="num">Requests</th></tr></thead><tbody>
        {{#rows}}<tr><td class="mono">{{group}}</td><td class="num">${{amount}}</td><td class="num">{{requests}}</td></tr>{{/rows}}
        {{^rows}}<tr><td colspan="3" class="muted">No charges in this period.</td></tr>{{/rows}}
        </tbody><tfoot><tr><th>Total</th><td class="num" id="spend-total">${{total}}</td><td class="num">{{totalRequests}}</td></tr></tfoot></table></div>
        {{/content}}{{/layout}}
        """

    static let cluster = """
        {{<layout}}{{$content}}
        <h1>Cluster</h1>
        {{^clustered}}<p class="muted">This node runs alone (no gossip). Routing tables are shared through the cluster: start nodes with <code>--gossip-bind</code> to set them.</p>{{/clustered}}
        <h2>Members</h2>
        {{#regions}}<h3>{{region}}</h3><div class="table-wrap"><table class="members"><thead><tr><th>Node</th><th>Address</th><th>State</th><th class="num">Incarnation</th></tr></thead><tbody>
        {{#members}}<tr><td class="mono">{{id}}{{#isSelf}} (this node){{/isSelf}}</td><td class="mono">{{address}}</td><td><span class="pill {{state}}">{{state}}</span></td><td class="num">{{incarnation}}</td></tr>{{/members}}
        </tbody></table></div>{{/regions}}
        <h2>Provider endpoints</h2>
        <div class="table-wrap"><table id="health"><thead><tr><th>Endpoint</th><th>Circuit</th>{{#nodes}}<th>{{.}}</th>{{/nodes}}</tr></thead><tbody>
        {{#endpoints}}<tr><td class="mono">{{key}}</td><td><span class="pill {{circuit}}">{{circuit}}</span></td>{{#cells}}<td>{{#reported}}{{uptime}}{{#routedAround}} <span class="pill open">routed around</span>{{/routedAround}}{{/reported}}{{^reported}}<span class="muted">–</span>{{/reported}}</td>{{/cells}}</tr>{{/endpoints}}
        {{^endpoints}}<tr><td colspan="2" class="muted">No endpoint has served a request yet.</td></tr>{{/endpoints}}
        </tbody></table></div>
        <p class="muted">Uptime over the last 5 minutes as each node saw it; an endpoint is routed around while its circuit is open.</p>
        <h2>Routing tables</h2>
        {{#tables}}<div class="card"><h3>{{region}}{{^set}} <span class="muted">(not set: every endpoint allowed)</span>{{/set}}</h3>
        <p>Allowed: <span class="mono">{{allowedText}}</span>{{^allowedText}}any{{/allowedText}} · preferred: <span class="mono">{{preferredText}}</span>{{^preferredText}}none{{/preferredText}}</p>
        {{#canOperate}}<form class="stack" method="post" action="/console/routing/{{region}}"><input type="hidden" name="csrf_token" value="{{csrf}}">
        <label>Allowed providers or endpoint tags (comma-separated, empty for all)<input name="allowed" value="{{allowedText}}" size="50"></label>
        {{#errors.allowed}}<p class="field-error">{{.}}</p>{{/errors.allowed}}
        <label>Preferred (comma-separated)<input name="preferred" value="{{preferredText}}" size="50"></label>
        {{#errors.preferred}}<p class="field-error">{{.}}</p>{{/errors.preferred}}
        <button type="submit">Save routing for {{region}}</button></form>{{/canOperate}}
        </div>{{/tables}}
        {{/content}}{{/layout}}
        """

    static let audit = """
        {{<layout}}{{$content}}
        <h1>Audit trail</h1>
        <form class="filters" method="get" action="/console/audit">
        <label>Actor <input name="actor" value="{{filters.actor}}" placeholder="key:key-…"></label>
        <label>Action <select name="action"><option value="">any</option>{{#actions}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/actions}}</select></label>
        <label>Target <input name="target" value="{{filters.target}}"></label>
        <label>Since <input name="since" value="{{filters.since}}"></label>
        <label>Until <input name="until" value="{{filters.until}}"></label>
        <button type="submit" class="secondary">Filter</button>
        <a class="button secondary" href="/console/audit/export.csv?{{query}}">Export CSV</a></form>
        {{#errors.filters}}<p class="field-error">{{.}}</p>{{/errors.filters}}
        <div class="table-wrap"><table id="audit"><thead><tr><th>Time (UTC)</th><th>Action</th><th>Target</th><th>Actor</th><th>Role</th><th>Node</th><th>From</th><th>Change</th></tr></thead><tbody>
        {{#rows}}<tr><td class="mono">{{time}}</td><td>{{action}}</td><td class="mono">{{target}}</td><td class="mono actor">{{actor}}</td><td>{{role}}</td><td class="mono">{{node}}</td><td class="mono">{{source}}</td>
        <td>{{#before}}<div class="muted">before</div><code>{{before}}</code>{{/before}}{{#after}}<div class="muted">after</div><code>{{after}}</code>{{/after}}</td></tr>{{/rows}}
        {{^rows}}<tr><td colspan="8" class="muted">No entries match.</td></tr>{{/rows}}
        </tbody></table></div>
        <div class="pager">{{#next}}<a href="/console/audit?{{query}}&amp;before={{next}}">Older entries →</a>{{/next}}</div>
        {{/content}}{{/layout}}
        """

    static let access = """
        {{<layout}}{{$content}}
        <h1>Access</h1>
        <div class="card"><h2>Single sign-on</h2>
        {{#oidc}}<p>Signing in through <span class="mono">{{issuer}}</span> (client <span class="mono">{{clientID}}</span>); groups are read from the <code>{{groupsClaim}}</code> claim.</p>{{/oidc}}
        {{^oidc}}<p class="muted">No OIDC provider is configured (Docs/console.md shows how).</p>{{/oidc}}</div>
        <h2>Role mappings</h2>
        <div class="table-wrap"><table id="roles"><thead><tr><th>Claim</th><th>Value</th><th>Role</th>{{#canOperate}}<th></th>{{/canOperate}}</tr></thead><tbody>
        {{#mappings}}<tr><td>{{claim}}</td><td class="mono">{{value}}</td><td>{{role}}</td>{{#canOperate}}<td><form method="post" action="/console/access/roles"><input type="hidden" name="csrf_token" value="{{csrf}}"><input type="hidden" name="claim" value="{{claim}}"><input type="hidden" name="value" value="{{value}}"><input type="hidden" name="role" value=""><button class="danger" type="submit">Remove</button></form></td>{{/canOperate}}</tr>{{/mappings}}
        {{^mappings}}<tr><td colspan="4" class="muted">No mappings: nobody can sign in through single sign-on yet.</td></tr>{{/mappings}}
        </tbody></table></div>
        {{#canOperate}}<div class="card"><h2>Map a group or an email domain to a role</h2>
        <form class="stack" method="post" action="/console/access/roles"><input type="hidden" name="csrf_token" value="{{csrf}}">
        <label for="claim">Claim</label><select id="claim" name="claim"><option value="group">group</option><option value="email_domain">email domain (verified emails only)</option></select>
        <label for="value">Value</label><input id="value" name="value" required>
        {{#errors.value}}<p class="field-error">{{.}}</p>{{/errors.value}}
        <label for="role">Role</label><select id="role" name="role"><option value="auditor">auditor</option><option value="billing">billing</option><option value="admin">admin</option></select>
        <p><button type="submit">Save mapping</button></p></form></div>{{/canOperate}}
        {{/content}}{{/layout}}
        """

    static let message = """
        {{<layout}}{{$content}}
        <div class="card"><h1>{{heading}}</h1><p id="message">{{text}}</p>{{#link}}<p><a href="{{href}}">{{label}}</a></p>{{/link}}</div>
        {{/content}}{{/layout}}
        """

    /// After single sign-on: a same-site page that moves on, so the browser sends the new
    /// SameSite=Strict session cookie (a redirect from the provider's cross-site navigation would not).
    static let redirect = """
        <!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={{to}}">
        <title>Signing in · Signalbox console</title><link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml"></head>
        <body><p>Signed in. <a href="{{to}}">Continue to the console</a>.</p></body></html>
        """
}
