"""The dashboard's pages as HTML: every value from the registry, a unit or a person goes through
`html.escape` (`_e`) on its way in. No script is inline (the Content-Security-Policy forbids
it); static/dashboard.js keeps the pages current and sends the actions. The DOM ids, classes
and data attributes here are what that script and the browser tests rely on."""

from html import escape

from host.dashboard.screen import HEIGHT, WIDTH, describe
from host.registry.errors import format_time

# Card facts: (device_json key, label, unit appended to a value). dashboard.js fills the same
# elements from GET /api/devices/{id} by their data-field ("via" said as `connection` says it).
FIELDS = (
    ("agent_id", "Agent", ""),
    ("server_id", "Instance", ""),
    ("firmware", "Firmware", ""),
    ("last_seen", "Last seen", ""),
    ("free_heap", "Free heap", " B"),
    ("rssi", "RSSI", " dBm"),
    ("via", "Connection", ""),
    ("reset_cause", "Reset cause", ""),
    ("txn_id", "Transaction", ""),
)
NONE = "—"  # a fact the unit has not reported (dashboard.js shows it the same way)
HISTORY_COLUMNS = ("Time", "Actor", "Action", "Agent", "Transaction", "Detail")


def _e(value):
    return escape(str(value))


def _value(value, unit=""):
    return NONE if value is None or value == "" else f"{value}{unit}"


def connection(doc):
    """How the unit reached the server in its last session, in words: "USB via bridge@<host>"
    or "Wi-Fi"; None for a unit never seen. dashboard.js says it the same way."""
    if doc.get("via"):
        return f"USB via {doc['via']}"
    return "Wi-Fi" if doc.get("last_seen") else None


def page(title, main, role=None, scripted=True):
    """A whole page: `main` is the content's HTML; `role` the login's (None: not logged in)."""
    header = '<a class="brand" href="/">qrfleet</a>'
    if role and scripted:
        header += '<p id="live" aria-live="polite">Connecting…</p>'
    if role:
        header += (
            f'<p class="who">Logged in as {_e(role)}</p>'
            '<form method="post" action="/logout"><button type="submit">Log out</button></form>'
        )
    script = '<script src="/static/dashboard.js" defer></script>' if scripted else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · qrfleet</title>"
        '<link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="/static/dashboard.css">{script}</head>'
        '<body><a class="skip" href="#main">Skip to content</a>'
        f'<header class="top">{header}</header>{main}</body></html>\n'
    ).encode()


def login(alert=None):
    alert_html = f'<p role="alert" class="alert">{_e(alert)}</p>' if alert else ""
    main = (
        '<main id="main" class="narrow"><h1>Log in</h1>'
        "<p>Log in with the admin token, or with the operator token to look without changing "
        "anything.</p>"
        f"{alert_html}"
        '<form id="login" method="post" action="/login">'
        '<label for="token">Token</label>'
        '<input name="token" type="password" id="token" autocomplete="current-password" '
        'required autofocus maxlength="512">'
        '<button type="submit">Log in</button></form></main>'
    )
    return page("Log in", main, scripted=False)


def error(message, role):
    main = f'<main id="main" class="narrow"><h1>Not shown</h1><p role="alert">{_e(message)}</p>'
    main += '<p><a href="/">Back to the fleet</a></p></main>'
    return page("Not shown", main, role, scripted=False)


def card(doc, heading="h3"):
    """One unit's card from its `device_json` document."""
    device_id = doc["device_id"]
    shown = doc.get("shown")
    online = doc.get("status") == "online"
    name = doc.get("name") or device_id
    facts = "".join(
        f'<dt>{label}</dt><dd data-field="{key}" data-unit="{unit}">'
        f"{_e(_value(connection(doc) if key == 'via' else doc.get(key), unit))}</dd>"
        for key, label, unit in FIELDS
    )
    subtitle = f'<p class="device-id">{_e(device_id)}</p>' if name != device_id else ""
    return (
        f'<article class="unit" id="unit-{_e(device_id)}" data-device="{_e(device_id)}" '
        f'data-status="{"online" if online else "offline"}" '
        f'data-screen="{_e((shown or {}).get("screen") or "")}" '
        f'data-agent="{_e(doc.get("agent_id") or "")}" aria-labelledby="name-{_e(device_id)}">'
        f'<{heading} id="name-{_e(device_id)}"><a href="/units/{_e(device_id)}">{_e(name)}</a>'
        f"</{heading}>{subtitle}"
        '<p class="status"><span class="dot" aria-hidden="true"></span>'
        f'<span data-field="status">{"Online" if online else "Offline"}</span></p>'
        f'<img class="screen" src="/units/{_e(device_id)}/screen.svg" width="{WIDTH}" '
        f'height="{HEIGHT}" alt="Screen: {_e(describe(shown, online))}">'
        f'<dl class="facts">{facts}</dl></article>'
    )


def overview(locations, docs, role):
    """Units grouped by location (`locations`: Location records), then those without one."""
    by_location = {}
    for doc in docs:
        by_location.setdefault(doc.get("location_id") or "", []).append(doc)
    groups = [
        (
            loc.location_id,
            loc.name if loc.name == loc.location_id else f"{loc.name} ({loc.location_id})",
        )
        for loc in locations
    ]
    known = {loc.location_id for loc in locations}
    groups += [(lid, f"Location {lid}") for lid in sorted(by_location) if lid and lid not in known]
    if by_location.get(""):
        groups.append(("", "Without a location"))
    sections = "".join(_location(lid, title, by_location.get(lid, [])) for lid, title in groups)
    if not groups:
        sections = (
            "<p>No locations or units yet: create a location with the API, then provision units "
            "(<code>qrfleet provision</code>).</p>"
        )
    main = f'<main id="main"><h1>Fleet</h1><div id="fleet">{sections}</div></main>'
    return page("Fleet", main, role)


def _location(location_id, title, docs):
    online = sum(doc.get("status") == "online" for doc in docs)
    cards = "".join(card(doc) for doc in docs) or '<p class="empty">No units here.</p>'
    slug = f"loc-{location_id or 'none'}"
    return (
        f'<section class="location" data-location="{_e(location_id)}" aria-labelledby="{_e(slug)}">'
        f'<h2 id="{_e(slug)}">{_e(title)}</h2>'
        f'<p class="count">{online} of {len(docs)} online</p>'
        f'<div class="units">{cards}</div></section>'
    )


def unit(doc, verdict, history, agents, locations, role):
    """The unit page: its card, the doctor's verdict, admin actions and the audit history
    (`history`: AuditEntry records, oldest first, shown newest first)."""
    device_id = doc["device_id"]
    name = doc.get("name") or device_id
    ready = "true" if verdict.get("ready") else "false"
    checks = "".join(f"<li>{_e(check)}</li>" for check in verdict.get("checks") or ())
    main = (
        f'<main id="main" data-device="{_e(device_id)}">'
        '<p><a href="/">← Fleet</a></p>'
        f"<h1>Unit {_e(name)}</h1>"
        f'<div class="unit-page">{card(doc, "h2")}<div class="side">'
        '<section aria-labelledby="doctor-h"><h2 id="doctor-h">Diagnosis</h2>'
        f'<p id="verdict" data-ready="{ready}">{_e(verdict.get("verdict", ""))}</p>'
        f'<ol id="checks"{"" if checks else " hidden"}>{checks}</ol></section>'
        f"{_actions(doc, agents, locations) if role == 'admin' else _look_only()}"
        "</div></div>"
        '<section aria-labelledby="history-h"><h2 id="history-h">History</h2>'
        '<div class="scroll" role="region" aria-labelledby="history-h" tabindex="0">'
        '<table id="history"><thead><tr>'
        + "".join(f'<th scope="col">{c}</th>' for c in HISTORY_COLUMNS)
        + f"</tr></thead><tbody>{''.join(_history_row(e) for e in reversed(history))}"
        "</tbody></table></div></section></main>"
    )
    return page(f"Unit {name}", main, role)


def _history_row(entry):
    cells = (
        format_time(entry.at),
        entry.actor,
        entry.action,
        entry.agent_id,
        entry.txn_id,
        entry.detail,
    )
    return "<tr>" + "".join(f"<td>{_e(_value(c))}</td>" for c in cells) + "</tr>"


def _look_only():
    return (
        '<section aria-labelledby="actions-h"><h2 id="actions-h">Actions</h2>'
        "<p>Unlinking, transferring, pairing and rebooting need the admin login; the operator "
        "login only looks.</p></section>"
    )


# Each action: (label, the question the dialog asks, what to say once the server took it).
_ACTIONS = {
    "unlink": (
        "Unlink",
        "Unlink this unit from its agent? The agent can no longer show QRs on it, and the unit "
        "shows its pairing QR.",
        "Unlinked: the unit shows its pairing QR.",
    ),
    "transfer": (
        "Transfer…",
        "Give this unit to another agent? It moves to that agent's location.",
        "Transferred.",
    ),
    "pairing": (
        "Show pairing QR",
        "Show a fresh pairing QR on this unit? Its previous pairing code stops working.",
        "A fresh pairing code was issued.",
    ),
    "reboot": (
        "Reboot",
        "Restart this unit? Any QR it shows disappears; it is back within seconds.",
        "Reboot sent: the unit restarts and reconnects.",
    ),
}


def _actions(doc, agents, locations):
    # Unlinking needs an owner, a pairing code no owner, a transfer someone to give the unit to
    # (dashboard.js keeps the first two current).
    linked = bool(doc.get("agent_id"))
    unusable = {"unlink": not linked, "pairing": linked, "transfer": not agents}
    buttons = "".join(
        f'<button type="button" data-action="{action}" data-confirm="{_e(ask)}" '
        f'data-done="{_e(done)}"{" disabled" if unusable.get(action) else ""}>{label}</button>'
        for action, (label, ask, done) in _ACTIONS.items()
    )
    names = {loc.location_id: loc.name for loc in locations}
    by_location = {}
    for agent in agents:
        by_location.setdefault(agent.location_id, []).append(agent)
    options = "".join(
        f'<optgroup label="{_e(names.get(lid, lid))}">'
        + "".join(
            f'<option value="{_e(a.agent_id)}">{_e(a.name)} ({_e(a.agent_id)})</option>'
            for a in group
        )
        + "</optgroup>"
        for lid, group in by_location.items()
    )
    return (
        '<section aria-labelledby="actions-h"><h2 id="actions-h">Actions</h2>'
        f'<div class="actions">{buttons}</div>'
        '<p id="action-result" role="status" aria-live="polite"></p>'
        '<dialog id="confirm" aria-labelledby="confirm-title">'
        '<form method="dialog"><h2 id="confirm-title">Please confirm</h2>'
        '<p id="confirm-text"></p>'
        '<p id="transfer-to" hidden><label for="agent">To agent</label>'
        f'<select id="agent" name="agent_id">{options}</select></p>'
        '<div class="buttons"><button value="cancel">Cancel</button>'
        '<button value="confirm" class="primary">Confirm</button></div>'
        "</form></dialog></section>"
    )
