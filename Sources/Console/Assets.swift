/// The console's stylesheet, script and icon, compiled into the executable: no file to ship,
/// no third-party asset, and all of them allowed by a `'self'`-only Content-Security-Policy.
enum ConsoleAssets {
    static let css = """
        :root { --ink: #1d2430; --muted: #5b6573; --line: #d8dde4; --paper: #fff; --wash: #f4f6f8; --accent: #1f5fbf;
          --good: #1d7a46; --bad: #b3261e; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
        * { box-sizing: border-box; }
        body { margin: 0; background: var(--wash); font-size: 15px; line-height: 1.45; }
        a { color: var(--accent); }
        header.top { background: #14233a; color: #fff; padding: .5rem 1rem; display: flex; flex-wrap: wrap; gap: .5rem 1.25rem; align-items: center; }
        header.top .brand { font-weight: 700; color: #fff; text-decoration: none; margin-right: .5rem; }
        header.top nav { display: flex; flex-wrap: wrap; gap: .25rem .9rem; flex: 1; }
        header.top nav a { color: #cfd9e8; text-decoration: none; padding: .15rem 0; }
        header.top nav a[aria-current="page"] { color: #fff; border-bottom: 2px solid #7fb0ff; }
        header.top .who { display: flex; gap: .5rem; align-items: center; font-size: .9rem; color: #cfd9e8; }
        header.top .who form { margin: 0; }
        header.top .pill { background: transparent; color: #fff; border-color: #7fb0ff; }
        main { padding: 1rem; max-width: 1200px; margin: 0 auto; }
        h1 { font-size: 1.4rem; margin: .25rem 0 1rem; }
        h2 { font-size: 1.1rem; margin: 1.25rem 0 .5rem; }
        .card { background: var(--paper); border: 1px solid var(--line); border-radius: 6px; padding: 1rem; margin-bottom: 1rem; }
        .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 1rem; }
        .stat { font-size: 1.5rem; font-weight: 600; }
        .muted { color: var(--muted); font-size: .9rem; }
        .table-wrap { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; background: var(--paper); }
        th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { font-size: .85rem; color: var(--muted); font-weight: 600; white-space: nowrap; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
        code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem; overflow-wrap: anywhere; }
        form.inline { display: inline; }
        form.stack label { display: block; margin: .5rem 0 .2rem; font-weight: 600; font-size: .9rem; }
        form.filters { display: flex; flex-wrap: wrap; gap: .5rem; align-items: flex-end; }
        form.filters label { display: flex; flex-direction: column; font-size: .8rem; color: var(--muted); }
        input, select, textarea { font: inherit; padding: .35rem .5rem; border: 1px solid #aab3bf; border-radius: 4px; max-width: 100%; }
        button, .button { font: inherit; padding: .4rem .8rem; border-radius: 4px; border: 1px solid var(--accent); background: var(--accent);
          color: #fff; cursor: pointer; text-decoration: none; display: inline-block; }
        button.secondary, .button.secondary { background: #fff; color: var(--accent); }
        button.danger { background: var(--bad); border-color: var(--bad); }
        .field-error { color: var(--bad); font-size: .85rem; margin: .2rem 0 0; }
        .flash { padding: .6rem .8rem; border-radius: 4px; margin-bottom: 1rem; background: #e6f4ea; border: 1px solid #a8d5b5; }
        .flash.error { background: #fdecea; border-color: #f3b8b3; }
        .secret { background: #fff8e1; border: 1px solid #f0d48a; padding: .6rem; border-radius: 4px; }
        .pill { display: inline-block; padding: 0 .45rem; border-radius: 999px; font-size: .8rem; border: 1px solid var(--line); background: var(--wash); }
        .pill.alive, .pill.closed, .pill.ok { color: var(--good); border-color: #a8d5b5; }
        .pill.suspect, .pill.open, .pill.dead, .pill.failed, .pill.revoked { color: var(--bad); border-color: #f3b8b3; }
        .pager { display: flex; gap: 1rem; margin: .75rem 0; }
        svg.chart { width: 100%; height: auto; max-height: 220px; display: block; }
        svg.chart .bar { fill: #4f86d9; }
        svg.chart .axis { stroke: #aab3bf; stroke-width: 1; }
        svg.chart .tick, svg.chart .empty { fill: var(--muted); font-size: 10px; }
        .login { max-width: 420px; margin: 3rem auto; }
        .login .or { text-align: center; color: var(--muted); margin: 1rem 0; }
        details summary { cursor: pointer; color: var(--accent); }
        @media (max-width: 600px) {
          main { padding: .6rem; }
          header.top { padding: .5rem .6rem; }
          th, td { padding: .3rem .4rem; }
          .stat { font-size: 1.2rem; }
        }
        """

    /// The one script: shows a purchase's fee as its amount is typed (the server shows the exact
    /// fee again before anything is recorded) and copies a new key's secret.
    static let javascript = """
        "use strict";
        document.addEventListener("DOMContentLoaded", function () {
          document.querySelectorAll("[data-fee-preview]").forEach(function (input) {
            var out = document.getElementById(input.getAttribute("data-fee-preview"));
            function show() {
              var amount = Number(input.value);
              if (!out) { return; }
              if (!(amount > 0)) { out.textContent = ""; return; }
              var fee = Math.max(amount * 0.055, 0.80);
              out.textContent = "Fee about $" + fee.toFixed(2) + " (5.5%, $0.80 minimum); the buyer pays about $" +
                (amount + fee).toFixed(2) + ". The exact fee is shown before you confirm.";
            }
            input.addEventListener("input", show);
            show();
          });
          document.querySelectorAll("[data-copy]").forEach(function (button) {
            button.addEventListener("click", function () {
              var source = document.getElementById(button.getAttribute("data-copy"));
              if (source && navigator.clipboard) { navigator.clipboard.writeText(source.textContent.trim()); button.textContent = "Copied"; }
            });
          });
        });
        """

    static let favicon = """
        <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#14233a"/>\
        <rect x="7" y="7" width="7" height="7" rx="1.5" fill="#7fb0ff"/><rect x="18" y="7" width="7" height="7" rx="1.5" fill="#cfd9e8"/>\
        <rect x="7" y="18" width="7" height="7" rx="1.5" fill="#cfd9e8"/><rect x="18" y="18" width="7" height="7" rx="1.5" fill="#7fb0ff"/></svg>
        """
}
