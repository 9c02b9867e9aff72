"""Hard synthetic preference pairs for per-module reward models.

`generate_pairs(n_pairs, seed)` returns pairs in the user pair format (see `data.schema`), plus a
`task_family` field:

    {"pair_id": "synth-s0-t000012-planner", "target_module": "planner", "task": "...",
     "task_family": "invoice_reconciliation",
     "positive": {"trajectory_full_context": "...", "module_k_all_rounds": "...", "outcome": 1},
     "negative": {"trajectory_full_context": "...", "module_k_all_rounds": "...", "outcome": 0}}

How a pair is made. Each task comes from one of 25 parametrised task families (flight booking,
invoice reconciliation, bug triage, ...); task strings are distinct. For the task we build one
successful multi-round trajectory P: one round per step of a 3-4 step plan, plus retry rounds for
the 1-2 tool errors every trajectory recovers from (sometimes only after a first fix that did not
help), 4-8 rounds in all. Every round carries all seven round fields (reflection, plan, memory
query and result, action, tool results, memory store), written out by `data.trajectory` in the
one layout real runs have too. For each module k we then derive N_k = P with one realistic fault
of module k, plus its plausible consequences later on (a failing observation, a memory miss, the
agent carrying on regardless):

- planner:    a step is missing; two adjacent steps are swapped; the plans are for a sibling task
              (same family, other entities); an irrelevant step from another family is added.
- executor:   a wrong tool (one that is right for a step of another family; it errors or returns
              something beside the point); a wrong argument (another entity, or a number like the
              right one); an ignored error (the agent moves on after an error as if the call had
              worked, skipping the retry it needed); a side-effecting call sent twice (a second
              booking, refund, order, ticket or email).
- memory:     a stale value (a number close to the stored one); another entity's record; an
              irrelevant record (another fact of the task, or a note left by an unrelated task);
              a key fact never stored (nothing, or the old fact again, is stored; a later lookup
              misses or returns the older record).
- reflection: the diagnosis that fixed an error in P blames the wrong cause instead (and applies
              that cause's fix, so the retry fails the same way); or, after a fix that did not
              help, it proposes that same fix again.

Pair i for module k is (P's context, P's module-k text) vs (N_k's context, N_k's module-k text);
P's context is therefore shared by the task's pairs for all modules.

Why it is hard. Negatives are written with exactly the vocabulary positives use: every tool, step,
entity, error message, cause and fix phrase appears in positives elsewhere (positives have errors,
diagnoses, retries, empty memory lookups and "nothing to store" rounds too), and there is no
sentence only negatives use. The wrongness is relative to the task and the context: a swapped plan
has the same words, a stale value is a number like the right one, a wrong tool is right for other
tasks, a wrong diagnosis is the right one for other errors. Where a fault adds an error to the
module text, another removes one (a wrong argument that went through without the error P had to
recover from), and faults lengthen the negative (an extra step, a duplicate call) about as often as
they shorten it (a missing step, a dropped retry, a fact never stored), so counting errors or
characters says little. Phrasing comes from several paraphrases per sentence kind,
drawn once per task and round and shared by P and its negatives, so a pair differs only where the
fault and its consequences are.

Everything is drawn from `random.Random` seeded with (seed, task index): same seed, same pairs; and
the first pairs of a larger request are the pairs of a smaller one.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from data.trajectory import DEFAULT_MODULE_FIELDS, render_context, render_module

try:
    from data.schema import DEFAULT_MODULES
except ImportError:  # pragma: no cover - the schema module needs pyarrow
    DEFAULT_MODULES = ("reflection", "planner", "executor", "memory")

__all__ = ["DEFAULT_MODULES", "FAMILY_NAMES", "generate_pairs"]


# --------------------------------------------------------------------------------------------
# Task families
# --------------------------------------------------------------------------------------------

_FORMATTER = string.Formatter()


def _slots(template: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in _FORMATTER.parse(template) if name)


@dataclass(frozen=True)
class _Step:
    plan: str  # imperative phrase; may only use slots known from the task
    tool: str
    args: tuple[tuple[str, str], ...]
    result: str
    key: str  # memory key of the fact this step produces
    value: str
    optional: bool = False

    @property
    def arg_slots(self) -> frozenset[str]:
        out: set[str] = set()
        for _, tmpl in self.args:
            out |= _slots(tmpl)
        return frozenset(out)


@dataclass(frozen=True)
class _Family:
    name: str
    sample: object  # Callable[[random.Random], dict[str, str]]
    task: str
    prior: tuple[str, str]  # a note memory may hold before the task starts (key, value)
    steps: tuple[_Step, ...]


def _S(plan, tool, args, result, key, value, optional=False) -> _Step:
    return _Step(plan, tool, tuple(args.items()), result, key, value, optional)


NAMES = (
    "Alice Chen", "Bruno Diaz", "Chloe Martin", "Dev Patel", "Elena Rossi", "Farid Haddad", "Grace Kim",
    "Hugo Silva", "Ines Novak", "Jonas Berg", "Kenji Sato", "Lena Fischer", "Mateo Cruz", "Nadia Ivanova",
    "Omar Aziz", "Priya Rao", "Quinn Walsh", "Rosa Alvarez", "Sam Okafor", "Tara Singh",
)
AIRPORTS = ("SFO", "JFK", "LAX", "ORD", "SEA", "BOS", "ATL", "DEN", "MIA", "AUS", "LHR", "CDG", "FRA", "AMS", "MAD", "YYZ")
CITIES = ("Lisbon", "Kyoto", "Prague", "Montreal", "Cape Town", "Vienna", "Seoul", "Mexico City", "Edinburgh", "Porto", "Oslo", "Hanoi")
VENDORS = ("Acme Supplies", "Northwind Traders", "Globex", "Initech", "Umbrella Logistics", "Stark Components", "Wayne Paper", "Vandelay Imports")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def _email(name: str) -> str:
    return name.lower().replace(" ", ".") + "@example.com"


def _money(r: random.Random, lo: int, hi: int) -> str:
    return f"{r.randint(lo, hi)}.{r.randint(0, 99):02d}"


def _date(r: random.Random) -> str:
    return f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def _num(r: random.Random, lo: int, hi: int) -> str:
    return str(r.randint(lo, hi))


def _id(r: random.Random, prefix: str, digits: int) -> str:
    return prefix + str(r.randint(10 ** (digits - 1), 10**digits - 1))


def _time(r: random.Random) -> str:
    return f"{r.randint(0, 23):02d}:{r.choice(('00', '15', '30', '45'))}"


def _version(r: random.Random) -> str:
    return f"{r.randint(1, 5)}.{r.randint(0, 24)}.{r.randint(0, 9)}"


def _two_names(r: random.Random) -> tuple[str, str]:
    a, b = r.sample(NAMES, 2)
    return a, b


def _s_flight(r):
    origin, dest = r.sample(AIRPORTS, 2)
    traveler = r.choice(NAMES)
    budget = r.randrange(300, 950, 10)
    price = budget - r.randint(15, 160)
    return dict(
        origin=origin, dest=dest, date=_date(r), traveler=traveler, email=_email(traveler),
        seat=r.choice(("aisle", "window")), budget=str(budget), price=str(price), slack=str(budget - price),
        n=_num(r, 3, 14), flight=r.choice(("UA", "DL", "AA", "BA", "LH", "AF", "KL")) + _num(r, 100, 999),
        conf="".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6)),
    )


def _s_invoice(r):
    return dict(
        vendor=r.choice(VENDORS), month=r.choice(MONTHS), inv=_id(r, "INV-", 5), po=_id(r, "PO-", 4),
        amount=_money(r, 200, 9800), ledger=_num(r, 1000, 9999), lines=_num(r, 2, 14), terms=r.choice(("15", "30", "45", "60")),
    )


def _s_bug(r):
    component = r.choice(("auth", "billing", "search", "upload", "notifications", "scheduler"))
    return dict(
        repo=r.choice(("acme/web", "acme/api", "tools/cli", "infra/deploy", "data/etl")), issue=_num(r, 1000, 9999),
        component=component, symptom=r.choice(("crash", "memory leak", "timeout", "data race", "wrong total")),
        fn=f"{component}_{r.choice(('flush', 'refresh', 'merge', 'commit', 'retry', 'parse'))}", version=_version(r),
        owner=r.choice(NAMES), rotation=r.choice(NAMES), label=r.choice(("bug", "regression", "p1", "needs-repro")),
        nfail=_num(r, 1, 6),
    )


def _s_cleaning(r):
    base = r.choice(("sales_2024", "customers", "sensor_log", "orders_q3", "survey_raw", "patients"))
    file = f"{base}_part{r.randint(1, 999)}.csv"
    rows, missing, dups = r.randint(2000, 90000), r.randint(10, 900), r.randint(5, 400)
    return dict(
        file=file, col=r.choice(("email", "amount", "timestamp", "zip_code", "phone")),
        key=r.choice(("order_id", "customer_id", "record_id", "device_id")), out=f"clean/{file[:-4]}.parquet",
        rows=str(rows), missing=str(missing), dups=str(dups), rows2=str(rows - missing), rows3=str(rows - missing - dups),
        ncols=_num(r, 6, 40),
    )


def _s_literature(r):
    topic = r.choice(("graph neural networks", "protein folding", "federated learning", "sparse attention",
                      "causal inference", "speech enhancement", "battery degradation", "few-shot segmentation"))
    c = sorted((r.randint(100, 6000) for _ in range(3)), reverse=True)
    return dict(
        topic=topic, slug=_slug(topic), year=str(r.randint(2012, 2022)), file=f"refs/{_slug(topic)}_{r.randint(1, 999)}.txt",
        n=_num(r, 40, 900), c1=str(c[0]), c2=str(c[1]), c3=str(c[2]), nprior=_num(r, 3, 30),
        doi1=f"10.{r.randint(1000, 9999)}/{r.randint(100000, 999999)}", doi2=f"10.{r.randint(1000, 9999)}/{r.randint(100000, 999999)}",
        doi3=f"10.{r.randint(1000, 9999)}/{r.randint(100000, 999999)}",
    )


def _s_calendar(r):
    p1, p2 = _two_names(r)
    return dict(
        meeting=r.choice(("design review", "quarterly planning", "1:1 sync", "vendor call", "hiring debrief", "incident retro")),
        p1=p1, p2=p2, e1=_email(p1), e2=_email(p2), duration=r.choice(("30", "45", "60", "90")), date=_date(r),
        slot=f"{r.choice(DAYS)} {r.randint(9, 16)}:{r.choice(('00', '30'))}", eid=_id(r, "EV-", 5), nconf=_num(r, 1, 12),
        early=r.choice(("9", "10")),
    )


def _s_restock(r):
    target = r.randrange(200, 2000, 50)
    onhand = r.randint(5, target - 60)
    return dict(
        sku=_id(r, "SKU-", 5), item=r.choice(("USB-C cables", "desk lamps", "printer toner", "safety gloves", "coffee filters", "label rolls")),
        warehouse=r.choice(("Reno", "Dallas", "Newark", "Leeds", "Rotterdam")), target=str(target), onhand=str(onhand),
        qty=str(target - onhand), supplier=r.choice(VENDORS), po=_id(r, "PO-", 4), moq=r.choice(("25", "50", "100")),
    )


def _s_scraping(r):
    pages = r.randint(2, 12)
    field = r.choice(("price", "rating", "stock status", "title"))
    return dict(
        site=r.choice(("shop.example.com", "gear.example.org", "books.example.net", "deals.example.io")),
        category=r.choice(("laptops", "running-shoes", "cookware", "board-games", "headphones")), field=field,
        fieldslug=_slug(field), pages=str(pages), n=str(pages * r.randint(20, 48)), delay=r.choice(("1", "2", "5")),
        out=f"scrapes/{_slug(field)}_{r.randint(1, 999)}.csv",
    )


def _s_report(r):
    dim = r.choice(("product line", "channel", "country", "sales rep"))
    person = r.choice(NAMES)
    region = r.choice(("EMEA", "APAC", "LATAM", "North America"))
    period = f"{r.choice(('Q1', 'Q2', 'Q3', 'Q4'))} {r.randint(2022, 2025)}"
    return dict(
        period=period, region=region, dim=dim, dimcol=_slug(dim), person=person, email=_email(person), due=_date(r),
        nrows=_num(r, 4, 60), total=_money(r, 100000, 9000000), chart=f"charts/{_slug(region)}_{_slug(period)}.png",
        report=f"reports/{_slug(region)}_{_slug(period)}.md", kb=_num(r, 12, 480), tmpl=r.choice(("quarterly", "regional", "exec")),
    )


def _s_email(r):
    person, vip = _two_names(r)
    return dict(
        person=person, mbox=_email(person), vip=vip, vipmail=_email(vip),
        topic=r.choice(("contract renewal", "offsite logistics", "budget freeze", "security audit", "launch date")),
        n=_num(r, 12, 80), nvip=_num(r, 1, 5), nnews=_num(r, 3, 20), draft=_id(r, "DR-", 4),
    )


def _s_recipe(r):
    dish = r.choice(("lasagna", "banana bread", "chicken curry", "pad thai", "minestrone", "apple pie"))
    s1 = r.choice((2, 4, 6))
    s2 = r.choice((8, 10, 12, 16, 20, 24))
    units = r.choice(("metric", "US customary"))
    q1 = r.randint(100, 900)
    ratio = s2 / s1
    q2 = f"{q1 * ratio:.0f}" if units == "metric" else f"{q1 * ratio / 28.35:.1f}"
    return dict(
        dish=dish, slug=_slug(dish), s1=str(s1), s2=str(s2), units=units, ning=_num(r, 6, 14), date=_date(r),
        ingredient=r.choice(("flour", "rice", "tomatoes", "butter", "stock", "sugar")), q1=str(q1), ratio=f"{ratio:.2f}",
        q2=q2, u2="g" if units == "metric" else "oz",
    )


def _s_trip(r):
    city = r.choice(CITIES)
    traveler = r.choice(NAMES)
    rate = r.randrange(90, 400, 5)
    return dict(
        city=city, cityslug=_slug(city), days=_num(r, 2, 6), traveler=traveler, date=_date(r), rate=str(rate),
        price=str(rate - r.randint(5, 60)), nhot=_num(r, 4, 30), natt=_num(r, 5, 25), conf=_id(r, "R", 6),
        landmark=r.choice(("the old town", "the main station", "the cathedral", "the harbour", "the museum quarter")),
        hotel=r.choice(("Hotel Aurora", "Riverside Inn", "The Linden", "Casa Verde", "Hotel Meridian")),
        pref=r.choice(("quiet rooms", "walking distance to transit", "breakfast included")),
    )


def _s_refactor(r):
    concern = r.choice(("retry", "validation", "logging", "caching", "error handling"))
    mod = r.choice(("core", "api", "billing", "sync", "render"))
    return dict(
        func=r.choice(("parse_config", "load_users", "render_invoice", "sync_orders", "build_index", "validate_payload")),
        path=f"src/{mod}/{r.choice(('service', 'utils', 'handlers', 'models'))}.py", concern=concern, cslug=_slug(concern),
        loc=_num(r, 60, 300), dup=_num(r, 2, 5), nuse=_num(r, 2, 20), removed=_num(r, 10, 80), ntests=_num(r, 40, 600),
        owner=r.choice(NAMES), pr=_num(r, 100, 9999),
    )


def _s_refund(r):
    customer = r.choice(NAMES)
    return dict(
        order=_id(r, "ORD-", 6), customer=customer, email=_email(customer),
        reason=r.choice(("damaged item", "late delivery", "wrong size", "missing parts")), amount=_money(r, 15, 900),
        item=r.choice(("blender", "rain jacket", "desk chair", "headset", "coffee grinder")),
        method=f"{r.choice(('Visa', 'Mastercard', 'Amex'))} ending {r.randint(1000, 9999)}", window=r.choice(("30", "60", "90")),
        rid=_id(r, "RF-", 5), ntickets=_num(r, 0, 6),
    )


def _s_logs(r):
    service = r.choice(("checkout-api", "auth-service", "search-api", "payments-worker", "media-upload"))
    h1 = r.randint(0, 20)
    return dict(
        code=r.choice(("500", "502", "503", "504")), service=service, date=_date(r), t1=f"{h1:02d}:00",
        t2=f"{h1 + r.randint(1, 3):02d}:00", t3=f"{h1:02d}:{r.randint(0, 59):02d}", nerr=_num(r, 50, 5000),
        msg=r.choice(("connection pool exhausted", "upstream reset", "disk full on /var", "null pointer in handler", "TLS handshake failed")),
        host=f"{service}-{r.randint(1, 12)}", pct=_num(r, 40, 95), deploy=f"v{_version(r)}", ticket=_id(r, "INC-", 5),
        sev=r.choice(("sev1", "sev2", "sev3")), oncall=r.choice(NAMES),
    )


def _s_expense(r):
    employee, manager = _two_names(r)
    month = r.choice(MONTHS)
    return dict(
        employee=employee, empslug=_slug(employee), month=month, monthslug=month.lower(), limit=str(r.randrange(50, 500, 25)),
        nrec=_num(r, 8, 40), total=_money(r, 150, 4800), nflag=_num(r, 1, 4), manager=manager, mgremail=_email(manager),
        rep=_id(r, "EXP-", 5), cc=_num(r, 100, 999),
    )


def _s_upgrade(r):
    package = r.choice(("requests", "pydantic", "numpy", "django", "sqlalchemy", "fastapi", "pandas"))
    major = r.randint(1, 4)
    return dict(
        package=package, v1=f"{major}.{r.randint(0, 9)}.{r.randint(0, 9)}", v2=f"{major + 1}.{r.randint(0, 3)}.0",
        repo=r.choice(("acme/web", "acme/api", "tools/cli", "data/etl", "ml/train")), nimp=_num(r, 1, 9), ntests=_num(r, 40, 900),
    )


def _s_onboard(r):
    person, mgr = _two_names(r)
    s1, s2 = r.sample(("GitHub", "Jira", "Slack", "Salesforce", "Snowflake", "Figma"), 2)
    return dict(
        person=person, email=_email(person), role=r.choice(("data analyst", "backend engineer", "designer", "account manager")),
        sys1=s1, sys2=s2, s1slug=s1.lower(), s2slug=s2.lower(), team=r.choice(("platform", "growth", "finance-ops", "design")),
        eid=_id(r, "E", 5), u1=_id(r, "u", 6), u2=_id(r, "u", 6), nmem=_num(r, 4, 40), mgr=mgr, start=_date(r),
    )


def _s_price(r):
    product = r.choice(("Kindle Paperwhite", "Nikon Z50", "Dyson V12", "Steam Deck", "Sony WH-1000XM5"))
    person = r.choice(NAMES)
    target = r.randrange(100, 900, 10)
    price = target - r.randint(3, 60)
    return dict(
        product=product, pslug=_slug(product), site=r.choice(("shop.example.com", "deals.example.io", "gear.example.org")),
        target=str(target), price=str(price), diff=str(target - price), last=str(target + r.randint(5, 80)), person=person,
        email=_email(person), date=_date(r),
    )


def _s_shipment(r):
    customer = r.choice(NAMES)
    carrier = r.choice(("UPS", "DHL", "FedEx", "PostNL"))
    return dict(
        tracking="1Z" + _num(r, 10**9, 10**10 - 1), carrier=carrier, cslug=carrier.lower(), order=_id(r, "ORD-", 6),
        customer=customer, email=_email(customer), promise=_date(r), eta=_date(r), location=r.choice(CITIES),
        ticket=_id(r, "CLM-", 5),
    )


def _s_backup(r):
    return dict(
        db=r.choice(("orders", "analytics", "users", "inventory", "billing")),
        bucket=f"s3://backups-{r.choice(('prod', 'staging', 'eu', 'us'))}", days=r.choice(("7", "14", "21", "30", "45", "60", "90")),
        date=_date(r),
        size=f"{r.randint(1, 300)}.{r.randint(0, 9)}", checksum="".join(r.choice("0123456789abcdef") for _ in range(12)),
        nold=_num(r, 2, 9), hh=f"{r.randint(0, 5):02d}",
    )


def _s_survey(r):
    survey = r.choice(("onboarding", "Q3 customer", "employee engagement", "beta feedback", "checkout UX"))
    metric = r.choice(("satisfaction", "ease-of-use", "recommendation", "support"))
    return dict(
        survey=survey, sslug=_slug(survey), n=_num(r, 80, 2000), metric=metric, mcol=_slug(metric),
        avg=f"{r.randint(25, 48) / 10:.1f}", prev=f"{r.randint(25, 48) / 10:.1f}", pct=_num(r, 12, 45),
        complaint=r.choice(("slow load times", "confusing pricing", "missing export", "login issues", "too many emails")),
    )


def _s_notes(r):
    meeting = r.choice(("design review", "quarterly planning", "vendor call", "hiring debrief", "incident retro", "roadmap sync"))
    return dict(
        meeting=meeting, mslug=_slug(meeting), date=_date(r), team=r.choice(("platform", "growth", "finance-ops", "design", "support")),
        mins=_num(r, 20, 90), nspk=_num(r, 3, 9), nitems=_num(r, 2, 12), nown=_num(r, 2, 6), nrcpt=_num(r, 4, 30),
    )


def _s_translate(r):
    l1, l2 = r.sample(("English", "German", "Spanish", "Japanese", "French", "Portuguese"), 2)
    doc = r.choice(("user guide", "privacy policy", "release notes", "onboarding FAQ"))
    return dict(
        doc=doc, docslug=_slug(doc), l1=l1, l2=l2, l2code=l2[:2].lower(), folder=r.choice(("docs/intl", "site/content", "shared/translations")),
        nwords=_num(r, 800, 12000), nsec=_num(r, 4, 30), nterms=_num(r, 20, 300), gv=_num(r, 2, 19), docv=_version(r),
    )


def _s_rotate(r):
    service = r.choice(("checkout-api", "auth-service", "search-api", "payments-worker", "media-upload"))
    return dict(
        service=service, env=r.choice(("prod", "staging", "eu-prod")), kid=_id(r, "key_", 6), oldkid=_id(r, "key_", 6),
        vpath=f"secret/{service}/api_key", npods=_num(r, 2, 24), days=r.choice(("30", "60", "90")),
    )


FAMILIES: tuple[_Family, ...] = (
    _Family("flight_booking", _s_flight,
        "Book the cheapest economy flight from {origin} to {dest} on {date} for {traveler}, keeping the fare under ${budget}, and email the confirmation.",
        ("{traveler} seat preference", "{seat}"), (
        _S("search flights from {origin} to {dest} on {date}", "search_flights", {"origin": "{origin}", "dest": "{dest}", "date": "{date}"},
           "{n} flights found; cheapest is {flight} at ${price}", "{origin}-{dest} cheapest fare", "{flight} at ${price}"),
        _S("check the fare against the ${budget} budget", "calculator", {"expr": "{budget} - {price}"},
           "{slack}", "{origin}-{dest} budget headroom", "${slack}", optional=True),
        _S("book the cheapest flight for {traveler}", "create_booking", {"flight": "{flight}", "passenger": "{traveler}", "seat": "{seat}"},
           "booking {conf} confirmed for {traveler}", "{traveler} booking reference", "{conf}"),
        _S("email the confirmation to {traveler}", "send_email", {"to": "{email}", "subject": "Flight {flight} booking {conf}"},
           "message queued for {email}", "{traveler} confirmation email", "sent to {email}"),
    )),
    _Family("invoice_reconciliation", _s_invoice,
        "Reconcile {vendor}'s {month} invoice {inv} against purchase order {po} and mark it reconciled in the ledger.",
        ("{vendor} payment terms", "net {terms}"), (
        _S("fetch invoice {inv} from the billing API", "http_get", {"url": "/billing/invoices/{inv}"},
           "invoice {inv} from {vendor}: {lines} lines, total ${amount}", "{inv} invoice total", "${amount}"),
        _S("look up the total of purchase order {po}", "sql_query", {"query": "SELECT total FROM purchase_orders WHERE id = '{po}'"},
           "1 row: total = {amount}", "{po} order total", "${amount}"),
        _S("compare the invoice total with the order total", "calculator", {"expr": "{amount} - {amount}"},
           "0.00", "{inv} variance", "$0.00, totals match", optional=True),
        _S("mark {inv} as reconciled in the ledger", "update_record", {"table": "ledger", "id": "{inv}", "status": "reconciled"},
           "ledger row {ledger} updated", "{inv} ledger status", "reconciled in row {ledger}"),
    )),
    _Family("bug_triage", _s_bug,
        "Triage issue #{issue} in {repo}: reproduce the reported {symptom} on v{version}, label it {label}, and assign it to the owner of the {component} module.",
        ("{repo} triage rotation", "{rotation} this week"), (
        _S("read issue #{issue} in {repo}", "http_get", {"url": "/repos/{repo}/issues/{issue}"},
           "issue #{issue}: {symptom} in {fn}() on v{version}", "issue #{issue} summary", "{symptom} in {fn}()"),
        _S("reproduce the {symptom} with the {component} tests on v{version}", "run_tests", {"path": "tests/{component}", "ref": "v{version}"},
           "{nfail} failed: test_{fn}", "issue #{issue} reproduction", "{nfail} failing tests on v{version}"),
        _S("find the owner of the {component} module", "sql_query", {"query": "SELECT owner FROM codeowners WHERE module = '{component}'"},
           "1 row: owner = {owner}", "{component} module owner", "{owner}"),
        _S("label #{issue} {label} and assign it to the owner", "update_record",
           {"table": "issues", "id": "{issue}", "label": "{label}", "assignee": "{owner}"},
           "issue #{issue} updated", "issue #{issue} status", "labelled {label}, assigned to {owner}"),
    )),
    _Family("data_cleaning", _s_cleaning,
        "Clean {file}: drop rows with a missing {col}, remove duplicate {key} values, and write the result to {out}.",
        ("{file} schema notes", "{ncols} columns, header on line 1"), (
        _S("load {file} and count missing {col} values", "read_file", {"path": "data/{file}"},
           "{rows} rows loaded; {missing} missing {col}", "{file} row count", "{rows} rows, {missing} missing {col}"),
        _S("drop the rows with a missing {col}", "run_python", {"code": "df = df.dropna(subset=['{col}'])"},
           "{rows2} rows remain", "{file} rows after dropna", "{rows2}"),
        _S("remove duplicate {key} values", "run_python", {"code": "df = df.drop_duplicates(subset=['{key}'])"},
           "{dups} duplicates removed; {rows3} rows remain", "{file} rows after dedup", "{rows3}"),
        _S("write the cleaned table to {out}", "write_file", {"path": "{out}"},
           "wrote {rows3} rows to {out}", "{file} cleaned output", "{out} with {rows3} rows"),
    )),
    _Family("literature_search", _s_literature,
        "Find the three most-cited papers on {topic} published since {year} and save their DOIs to {file}.",
        ("{topic} reading list", "{nprior} papers saved last month"), (
        _S("search the literature index for {topic} since {year}", "search_docs", {"query": "{topic}", "since": "{year}"},
           "{n} papers matched", "{topic} search hits", "{n} papers"),
        _S("fetch citation counts for the matches", "http_get", {"url": "/citations?topic={slug}&since={year}"},
           "top citation counts: {c1}, {c2}, {c3}", "{topic} top citation counts", "{c1}, {c2}, {c3}"),
        _S("extract the DOIs of the top three papers", "run_python", {"code": "dois = [p.doi for p in ranked[:3]]"},
           "DOIs: {doi1}, {doi2}, {doi3}", "{topic} top DOIs", "{doi1}, {doi2}, {doi3}"),
        _S("save the DOIs to {file}", "write_file", {"path": "{file}"},
           "wrote 3 lines to {file}", "{topic} DOI file", "{file}"),
    )),
    _Family("calendar_scheduling", _s_calendar,
        "Schedule a {duration}-minute {meeting} with {p1} and {p2} in the week of {date}, avoiding their existing meetings.",
        ("{p1} scheduling preference", "no meetings before {early}:00"), (
        _S("fetch the calendars of {p1} and {p2} for the week of {date}", "calendar_lookup", {"people": "{p1}, {p2}", "week": "{date}"},
           "{nconf} existing meetings between them", "{p1} and {p2} busy slots", "{nconf} conflicts in the week of {date}"),
        _S("find a common free {duration}-minute slot", "run_python", {"code": "free = common_slots(cals, minutes={duration})"},
           "earliest common slot: {slot}", "{meeting} candidate slot", "{slot}"),
        _S("create the {meeting} event", "create_event", {"title": "{meeting}", "start": "{slot}", "minutes": "{duration}"},
           "event {eid} created", "{meeting} event id", "{eid}"),
        _S("send invites to {p1} and {p2}", "send_email", {"to": "{e1}, {e2}", "subject": "Invite: {meeting}"},
           "2 invites sent", "{meeting} invites", "sent to {p1} and {p2}", optional=True),
    )),
    _Family("inventory_restock", _s_restock,
        "Restock {item} ({sku}) at the {warehouse} warehouse: order enough units to bring stock up to {target}.",
        ("{sku} reorder notes", "minimum order {moq} units"), (
        _S("check current stock of {sku} in {warehouse}", "sql_query",
           {"query": "SELECT on_hand FROM stock WHERE sku = '{sku}' AND site = '{warehouse}'"},
           "1 row: on_hand = {onhand}", "{sku} stock in {warehouse}", "{onhand} units"),
        _S("compute how many units are needed to reach {target}", "calculator", {"expr": "{target} - {onhand}"},
           "{qty}", "{sku} reorder quantity", "{qty} units"),
        _S("look up the preferred supplier for {sku}", "sql_query", {"query": "SELECT supplier FROM suppliers WHERE sku = '{sku}' AND preferred"},
           "1 row: supplier = {supplier}", "{sku} supplier", "{supplier}", optional=True),
        _S("place the purchase order", "create_order", {"sku": "{sku}", "qty": "{qty}", "supplier": "{supplier}"},
           "purchase order {po} created for {qty} units", "{sku} purchase order", "{po} for {qty} units"),
    )),
    _Family("web_scraping", _s_scraping,
        "Scrape the {field} of every product in the {category} category on {site} and save them as CSV to {out}.",
        ("{site} crawl policy", "crawl delay {delay}s"), (
        _S("check robots.txt on {site}", "http_get", {"url": "https://{site}/robots.txt"},
           "crawling allowed for /{category}, crawl-delay {delay}", "{site} robots rules", "/{category} allowed, delay {delay}s", optional=True),
        _S("collect the product links in /{category}", "http_get", {"url": "https://{site}/{category}?page=1"},
           "{n} product links across {pages} pages", "{site}/{category} product links", "{n} links on {pages} pages"),
        _S("parse the {field} from each product page", "run_python", {"code": "rows = [parse_{fieldslug}(p) for p in pages]"},
           "{n} {field} values parsed", "{site}/{category} parsed {field}", "{n} values"),
        _S("save the rows to {out}", "write_file", {"path": "{out}"},
           "wrote {n} rows to {out}", "{category} scrape output", "{out}"),
    )),
    _Family("sql_report", _s_report,
        "Build the {period} revenue report for {region}, broken down by {dim}, and send it to {person} by {due}.",
        ("{region} report template", "templates/{tmpl}.md"), (
        _S("query {period} revenue for {region} by {dim}", "sql_query",
           {"query": "SELECT {dimcol}, SUM(revenue) FROM sales WHERE region = '{region}' AND period = '{period}' GROUP BY 1"},
           "{nrows} rows; total revenue {total}", "{region} {period} revenue", "{total} over {nrows} groups"),
        _S("plot revenue by {dim}", "run_python", {"code": "plot_bar(df, x='{dimcol}', y='revenue', out='{chart}')"},
           "chart saved to {chart}", "{region} {period} chart", "{chart}", optional=True),
        _S("write the report file", "write_file", {"path": "{report}"},
           "wrote {report} ({kb} KB)", "{region} {period} report file", "{report}"),
        _S("email the report to {person}", "send_email", {"to": "{email}", "subject": "{region} {period} revenue", "attach": "{report}"},
           "message queued for {email}", "{region} {period} report delivery", "sent to {person}"),
    )),
    _Family("email_triage", _s_email,
        "Triage the {n} unread emails in {person}'s inbox: flag everything from {vip}, archive the newsletters, and draft a reply on the {topic} thread.",
        ("{person} mail rules", "newsletters go to the Reading folder"), (
        _S("list the unread emails for {person}", "search_email", {"mailbox": "{mbox}", "query": "is:unread"},
           "{n} unread: {nvip} from {vip}, {nnews} newsletters", "{person} unread summary", "{n} unread, {nvip} from {vip}, {nnews} newsletters"),
        _S("flag the messages from {vip}", "update_record", {"table": "mail", "query": "from:{vipmail}", "flag": "important"},
           "{nvip} messages flagged", "{person} flagged mail", "{nvip} from {vip}"),
        _S("archive the newsletters", "update_record", {"table": "mail", "query": "label:newsletter is:unread", "folder": "archive"},
           "{nnews} messages archived", "{person} archived mail", "{nnews} newsletters"),
        _S("draft a reply on the {topic} thread", "send_email", {"to": "{vipmail}", "subject": "Re: {topic}", "draft": "true"},
           "draft {draft} saved", "{topic} reply draft", "{draft}"),
    )),
    _Family("recipe_scaling", _s_recipe,
        "Scale the {dish} recipe from {s1} to {s2} servings for the dinner on {date} and convert all quantities to {units} units.",
        ("{dish} recipe source", "recipes/{slug}.md"), (
        _S("read the {dish} recipe", "read_file", {"path": "recipes/{slug}.md"},
           "{ning} ingredients for {s1} servings; {ingredient}: {q1} g", "{dish} base recipe", "{ning} ingredients, {ingredient} {q1} g"),
        _S("compute the scale factor from {s1} to {s2} servings", "calculator", {"expr": "{s2} / {s1}"},
           "{ratio}", "{dish} scale factor", "{ratio}"),
        _S("scale and convert every quantity to {units}", "run_python", {"code": "scaled = convert(scale(recipe, {ratio}), system='{units}')"},
           "{ning} quantities converted; {ingredient}: {q2} {u2}", "{dish} scaled {ingredient}", "{q2} {u2}"),
        _S("save the scaled recipe", "write_file", {"path": "recipes/{slug}_x{s2}.md"},
           "wrote recipes/{slug}_x{s2}.md", "{dish} scaled file", "recipes/{slug}_x{s2}.md", optional=True),
    )),
    _Family("travel_itinerary", _s_trip,
        "Plan a {days}-day trip to {city} for {traveler} starting {date}, with a hotel near {landmark} under ${rate} a night.",
        ("{traveler} travel profile", "prefers {pref}"), (
        _S("search hotels near {landmark} in {city} under ${rate}", "search_hotels",
           {"city": "{city}", "near": "{landmark}", "max_rate": "{rate}", "checkin": "{date}"},
           "{nhot} hotels; best match {hotel} at ${price}/night", "{city} hotel pick", "{hotel} at ${price}/night"),
        _S("list attractions near {landmark}", "search_docs", {"query": "{city} attractions near {landmark}"},
           "{natt} attractions found", "{city} attractions", "{natt} near {landmark}", optional=True),
        _S("reserve the hotel for {days} nights", "create_booking", {"hotel": "{hotel}", "guest": "{traveler}", "nights": "{days}", "checkin": "{date}"},
           "reservation {conf} confirmed", "{traveler} hotel reservation", "{conf}"),
        _S("write the day-by-day itinerary", "write_file", {"path": "trips/{cityslug}_{date}.md"},
           "wrote a {days}-day itinerary", "{city} itinerary file", "trips/{cityslug}_{date}.md"),
    )),
    _Family("code_refactor", _s_refactor,
        "For PR #{pr}, refactor {func}() in {path} to remove the duplicated {concern} logic without changing behaviour, then run the test suite.",
        ("{path} ownership", "maintained by {owner}"), (
        _S("read {func}() in {path}", "read_file", {"path": "{path}"},
           "{func}() is {loc} lines with {dup} duplicated {concern} blocks", "{func} analysis", "{loc} lines, {dup} duplicated {concern} blocks"),
        _S("find all call sites of {func}()", "search_code", {"query": "{func}("},
           "{nuse} call sites", "{func} call sites", "{nuse}", optional=True),
        _S("extract the {concern} logic into a helper", "write_file", {"path": "{path}", "patch": "extract _{cslug}_helper"},
           "patch applied: -{removed} lines", "{func} refactor patch", "-{removed} lines"),
        _S("run the test suite", "run_tests", {"path": "tests/"},
           "{ntests} passed, 0 failed", "{func} refactor tests", "{ntests} passed"),
    )),
    _Family("customer_refund", _s_refund,
        "Process a refund for order {order} placed by {customer}: verify the {reason} claim, refund the amount paid to the original payment method, and notify the customer.",
        ("{customer} account notes", "{ntickets} previous support tickets"), (
        _S("fetch order {order}", "http_get", {"url": "/orders/{order}"},
           "order {order}: {item}, paid ${amount} with {method}", "{order} payment", "${amount} via {method}"),
        _S("verify the {reason} claim against the return policy", "sql_query", {"query": "SELECT status FROM claims WHERE order_id = '{order}'"},
           "1 row: status = verified ({reason}, within {window} days)", "{order} claim", "verified, {reason}"),
        _S("issue the refund to the original payment method", "create_refund", {"order": "{order}", "amount": "{amount}", "method": "original"},
           "refund {rid} issued for ${amount}", "{order} refund", "{rid} for ${amount}"),
        _S("email {customer} about the refund", "send_email", {"to": "{email}", "subject": "Your refund for {order}"},
           "message queued for {email}", "{order} customer notice", "sent to {email}"),
    )),
    _Family("log_analysis", _s_logs,
        "Find the cause of the {code} errors on {service} between {t1} and {t2} on {date} and open an incident ticket with the findings.",
        ("{service} on-call", "{oncall}"), (
        _S("search {service} logs for {code} errors between {t1} and {t2}", "search_logs",
           {"service": "{service}", "status": "{code}", "from": "{date}T{t1}", "to": "{date}T{t2}"},
           "{nerr} matching lines; top message: {msg}", "{service} {code} errors", "{nerr} lines, mostly {msg}"),
        _S("group the errors by host", "run_python", {"code": "errs.groupby('host').size().sort_values()"},
           "{host} accounts for {pct}% of errors", "{service} error hotspot", "{host} with {pct}%"),
        _S("check recent deploys to {service}", "http_get", {"url": "/deploys?service={service}&date={date}"},
           "deploy {deploy} rolled out to {host} at {t3}", "{service} suspect deploy", "{deploy} at {t3}", optional=True),
        _S("open an incident ticket with the findings", "create_ticket", {"title": "{code}s on {service}", "severity": "{sev}"},
           "ticket {ticket} opened", "{service} incident ticket", "{ticket}"),
    )),
    _Family("expense_report", _s_expense,
        "Compile {employee}'s {month} expense report from the receipts folder, flag items over ${limit}, and submit it to {manager} for approval.",
        ("{employee} cost center", "CC-{cc}"), (
        _S("read the {month} receipts for {employee}", "read_file", {"path": "receipts/{empslug}/{monthslug}/"},
           "{nrec} receipts, total ${total}", "{employee} {month} receipts", "{nrec} receipts, ${total}"),
        _S("flag items over ${limit}", "run_python", {"code": "flagged = [x for x in receipts if x.amount > {limit}]"},
           "{nflag} items over ${limit}", "{employee} {month} flagged items", "{nflag} over ${limit}"),
        _S("generate the expense report", "write_file", {"path": "reports/expenses_{empslug}_{monthslug}.pdf"},
           "report {rep} generated", "{employee} {month} report", "{rep}"),
        _S("submit the report to {manager}", "send_email", {"to": "{mgremail}", "subject": "Expense report {rep}"},
           "message queued for {mgremail}", "{rep} approval request", "sent to {manager}"),
    )),
    _Family("dependency_upgrade", _s_upgrade,
        "Upgrade {package} from {v1} to {v2} in {repo}, fix any broken imports, and confirm the tests pass.",
        ("{repo} pinned versions", "{package}=={v1}"), (
        _S("bump {package} to {v2} in the lockfile", "write_file", {"path": "{repo}/requirements.lock", "patch": "{package}=={v2}"},
           "lockfile updated: {package} {v1} -> {v2}", "{repo} {package} version", "{v2}"),
        _S("search for imports broken by the upgrade", "search_code", {"query": "from {package} import", "repo": "{repo}"},
           "{nimp} imports reference removed names", "{repo} broken imports", "{nimp}"),
        _S("fix the broken imports", "write_file", {"path": "{repo}/src", "patch": "update {nimp} imports"},
           "{nimp} files patched", "{repo} import fixes", "{nimp} files patched"),
        _S("run the test suite", "run_tests", {"path": "{repo}/tests"},
           "{ntests} passed, 0 failed", "{repo} test run", "{ntests} passed"),
    )),
    _Family("account_onboarding", _s_onboard,
        "Onboard new hire {person} ({role}, starting {start}): create accounts in {sys1} and {sys2} and add them to the {team} group.",
        ("{team} group policy", "needs approval from {mgr}"), (
        _S("look up {person}'s HR record", "sql_query", {"query": "SELECT employee_id, email FROM hr WHERE name = '{person}'"},
           "1 row: employee_id = {eid}, email = {email}", "{person} HR record", "{eid}, {email}"),
        _S("create the {sys1} account", "http_post", {"url": "/{s1slug}/users", "email": "{email}"},
           "{sys1} user {u1} created", "{person} {sys1} account", "{u1}"),
        _S("create the {sys2} account", "http_post", {"url": "/{s2slug}/users", "email": "{email}"},
           "{sys2} user {u2} created", "{person} {sys2} account", "{u2}"),
        _S("add {person} to the {team} group", "update_record", {"table": "groups", "id": "{team}", "add_member": "{eid}"},
           "{team} now has {nmem} members", "{team} membership", "{person} added, {nmem} members"),
    )),
    _Family("price_monitoring", _s_price,
        "Check on {date} whether the price of the {product} on {site} has dropped below ${target} and alert {person} if it has.",
        ("{product} price history", "last seen at ${last}"), (
        _S("fetch the {product} listing on {site}", "http_get", {"url": "https://{site}/item/{pslug}"},
           "listing found: {product}, ${price}, in stock", "{product} current price", "${price}"),
        _S("compare the price with the ${target} threshold", "calculator", {"expr": "{target} - {price}"},
           "{diff}", "{product} margin below target", "${diff}"),
        _S("record the price in the tracker", "update_record", {"table": "price_tracker", "id": "{pslug}", "price": "{price}"},
           "tracker row updated", "{product} tracker entry", "${price} on {date}", optional=True),
        _S("alert {person} about the drop", "send_email", {"to": "{email}", "subject": "{product} now ${price}"},
           "message queued for {email}", "{product} alert", "sent to {person}"),
    )),
    _Family("shipment_tracking", _s_shipment,
        "Track shipment {tracking} for order {order}; it is past the promised {promise}, so notify {customer} of the new delivery date.",
        ("{order} shipping notes", "ships via {carrier}"), (
        _S("query {carrier} for shipment {tracking}", "http_get", {"url": "/carriers/{cslug}/track/{tracking}"},
           "in transit at {location}; new ETA {eta}", "{tracking} status", "in transit, ETA {eta}"),
        _S("update order {order} with the new ETA", "update_record", {"table": "orders", "id": "{order}", "eta": "{eta}"},
           "order {order} updated", "{order} ETA", "{eta}"),
        _S("open a delay claim with {carrier}", "create_ticket", {"title": "Delay {tracking}", "queue": "{carrier}"},
           "ticket {ticket} opened", "{tracking} carrier claim", "{ticket}", optional=True),
        _S("email {customer} the new delivery date", "send_email", {"to": "{email}", "subject": "Update on order {order}"},
           "message queued for {email}", "{order} delay notice", "sent to {email}"),
    )),
    _Family("database_backup", _s_backup,
        "Back up the {db} database to {bucket} for {date}, verify the checksum, and prune backups older than {days} days.",
        ("{db} backup schedule", "nightly at {hh}:00 UTC"), (
        _S("dump the {db} database", "run_shell", {"cmd": "pg_dump {db} | gzip > /tmp/{db}.sql.gz"},
           "dump finished: {size} GB", "{db} dump", "/tmp/{db}.sql.gz, {size} GB"),
        _S("upload the dump to {bucket}", "run_shell", {"cmd": "aws s3 cp /tmp/{db}.sql.gz {bucket}/{db}/{date}.sql.gz"},
           "upload complete: {bucket}/{db}/{date}.sql.gz", "{db} backup location", "{bucket}/{db}/{date}.sql.gz"),
        _S("verify the checksum of the uploaded file", "run_shell", {"cmd": "sha256sum /tmp/{db}.sql.gz"},
           "sha256 {checksum} matches remote", "{db} backup checksum", "{checksum}"),
        _S("prune backups older than {days} days", "run_shell", {"cmd": "prune_backups --bucket {bucket}/{db} --older-than {days}d"},
           "{nold} old backups deleted", "{db} pruned backups", "{nold} deleted"),
    )),
    _Family("survey_analysis", _s_survey,
        "Summarise the {n} responses to the {survey} survey: compute the average {metric} score and identify the most common complaint.",
        ("{survey} survey baseline", "previous average {prev}"), (
        _S("load the {survey} survey responses", "read_file", {"path": "surveys/{sslug}.csv"},
           "{n} responses loaded", "{survey} responses", "{n}"),
        _S("compute the average {metric} score", "run_python", {"code": "df['{mcol}'].mean()"},
           "{avg}", "{survey} average {metric}", "{avg}"),
        _S("cluster the free-text answers into complaint themes", "run_python", {"code": "themes = cluster(df['comment'], k=8)"},
           "top theme: {complaint} ({pct}% of comments)", "{survey} top complaint", "{complaint} at {pct}%"),
        _S("write the summary", "write_file", {"path": "reports/{sslug}_summary.md"},
           "wrote reports/{sslug}_summary.md", "{survey} summary file", "reports/{sslug}_summary.md", optional=True),
    )),
    _Family("meeting_notes", _s_notes,
        "Turn the {mins}-minute transcript of the {meeting} on {date} into notes with action items and send them to the {team} team.",
        ("{team} team mailing list", "{team}@example.com"), (
        _S("read the {meeting} transcript from {date}", "read_file", {"path": "transcripts/{date}_{mslug}.txt"},
           "{mins}-minute transcript, {nspk} speakers", "{meeting} transcript", "{mins} minutes, {nspk} speakers"),
        _S("extract the action items and owners", "run_python", {"code": "items = extract_action_items(transcript)"},
           "{nitems} action items with {nown} owners", "{meeting} action items", "{nitems} items, {nown} owners"),
        _S("write the meeting notes", "write_file", {"path": "notes/{date}_{mslug}.md"},
           "wrote notes/{date}_{mslug}.md", "{meeting} notes file", "notes/{date}_{mslug}.md"),
        _S("send the notes to the {team} team", "send_email", {"to": "{team}@example.com", "subject": "Notes: {meeting} {date}"},
           "message queued for {nrcpt} recipients", "{meeting} notes delivery", "sent to {nrcpt} recipients"),
    )),
    _Family("doc_translation", _s_translate,
        "Translate version {docv} of the {doc} from {l1} into {l2}, keep the approved glossary terms, and upload it to {folder}.",
        ("{l2} glossary version", "v{gv}"), (
        _S("read the {l1} {doc}", "read_file", {"path": "docs/{docslug}.md"},
           "{nwords} words in {nsec} sections", "{doc} source", "{nwords} words, {nsec} sections"),
        _S("load the {l2} glossary", "read_file", {"path": "glossary/{l2code}.csv"},
           "{nterms} approved terms", "{l2} glossary terms", "{nterms} terms", optional=True),
        _S("translate the {doc} into {l2}", "run_python", {"code": "out = translate(doc, target='{l2code}', glossary=terms)"},
           "translated {nsec} sections; {nterms} glossary terms enforced", "{doc} {l2} draft", "{nsec} sections translated"),
        _S("upload the translation to {folder}", "http_post", {"url": "/{folder}/{docslug}_{l2code}.md"},
           "uploaded to {folder}/{docslug}_{l2code}.md", "{doc} {l2} upload", "{folder}/{docslug}_{l2code}.md"),
    )),
    _Family("key_rotation", _s_rotate,
        "Rotate API key {oldkid} of {service} in {env}, update the secret in the vault, and confirm the service still authenticates.",
        ("{service} key rotation policy", "every {days} days"), (
        _S("create a new API key for {service}", "http_post", {"url": "/keys", "service": "{service}", "env": "{env}"},
           "new key {kid} created", "{service} {env} new key", "{kid}"),
        _S("update the vault secret for {service}", "update_record", {"table": "vault", "id": "{vpath}", "value": "{kid}"},
           "secret {vpath} updated", "{service} vault secret", "{vpath} now {kid}"),
        _S("restart the {service} pods in {env}", "run_shell", {"cmd": "kubectl rollout restart deploy/{service} -n {env}"},
           "{npods} pods restarted", "{service} {env} rollout", "{npods} pods restarted", optional=True),
        _S("check that {service} authenticates with the new key", "http_get", {"url": "https://{service}.{env}.internal/health"},
           "health 200 OK, auth ok", "{service} {env} health", "200 OK"),
    )),
)

FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)
_STEPS_BY_TOOL: dict[str, list[tuple[_Family, _Step]]] = {}
for _f in FAMILIES:
    for _s in _f.steps:
        _STEPS_BY_TOOL.setdefault(_s.tool, []).append((_f, _s))
# A tool appears once per step that uses it, so a wrong tool is drawn as often as it is used.
_ALL_TOOLS: tuple[str, ...] = tuple(sorted(tool for tool, uses in _STEPS_BY_TOOL.items() for _ in uses))


# --------------------------------------------------------------------------------------------
# Error kinds and the sentence templates (several paraphrases per sentence kind)
# --------------------------------------------------------------------------------------------

_KINDS = ("timeout", "rate_limit", "auth", "bad_format", "permission", "server_error")
_ERRMSG = {
    "timeout": "error 504: gateway timeout after 30s",
    "rate_limit": "error 429: rate limit exceeded, retry later",
    "auth": "error 401: session token expired",
    "bad_format": "error 400: invalid value for '{arg}'",
    "permission": "error 403: {tool} requires write permission",
    "server_error": "error 500: internal error while processing the request",
}
_CAUSE = {
    "timeout": ("the service timed out", "the gateway timed out before answering", "the request ran past the 30s limit"),
    "rate_limit": ("we hit the rate limit", "too many requests went out too quickly", "the API is throttling us"),
    "auth": ("the session token expired", "our credentials are no longer valid", "the auth session lapsed"),
    "bad_format": ("the {arg} argument was malformed", "{arg} was passed as a list instead of a single value", "the value for {arg} had the wrong shape"),
    "permission": ("the default user lacks write permission", "{tool} needs elevated rights", "the account may not call {tool}"),
    "server_error": ("the backend crashed on an oversized request", "the server choked on too many items at once", "the request was too large for the server"),
}
_FIX = {
    "timeout": ("retry the same call unchanged", "send the identical request again", "simply try it once more as is"),
    "rate_limit": ("wait and retry with retry_after=30", "back off for 30 seconds and retry", "retry once the 30s rate window resets"),
    "auth": ("refresh the token and call again", "re-authenticate with refresh_token() first", "get a fresh token, then retry"),
    "bad_format": ("pass {arg} as a plain value", "reformat {arg} and call again", "send {arg} as a single scalar"),
    "permission": ("rerun it as the service user", 'call it again with as_user="svc-bot"', "retry under the svc-bot account"),
    "server_error": ("retry with page_size=50", "split the request into smaller pages", "retry with a smaller page size"),
}
_R_START = (
    "Nothing has been tried yet; first I need to {next}.",
    "Fresh start. Step one: {next}.",
    "No attempts so far, so the first move is to {next}.",
)
_R_OK = (
    "{tool} worked ({fact}). Next I need to {next}.",
    "That succeeded: {fact}. Now {next}.",
    "Got {fact} from {tool}; the next step is to {next}.",
)
_R_AGAIN = (
    "{tool} failed again, so {tried} did not help: {cause}. I will {fix}.",
    "Same error after {tried}; the real problem is that {cause}. Plan: {fix}.",
    "{tried} changed nothing. Diagnosis: {cause}, so I should {fix}.",
)
_TRIED = {
    "timeout": "retrying as is", "rate_limit": "backing off", "auth": "refreshing the token",
    "bad_format": "reformatting the argument", "permission": "switching to svc-bot", "server_error": "using smaller pages",
}
_R_ERR = (
    "{tool} failed because {cause}. I will {fix}.",
    "The last call errored: {cause}. Plan: {fix}.",
    "Diagnosis: {cause}, so I should {fix}.",
)
_MQ = ("{key}", "lookup: {key}", "recall {key}")
_MR_VAL = ("{key} = {value}", "1 match: {key} = {value}", "found {key}: {value}")
_MR_NONE = ("no matching entry", "nothing stored for {key}", "0 matches for {key}")
_MS_VAL = ("{key} = {value}", "save {key} = {value}", "remember {key}: {value}")
_MS_NONE = ("nothing new to store", "no new facts this round", "skip: nothing worth saving")

_NUMERIC = re.compile(r"-?\d+(?:\.\d+)?")
_NUMBER_IN_TEXT = re.compile(r"\d+(?:\.\d+)?")


def _plan_text(items: Sequence[str], style: int) -> str:
    v = style % 4
    if v == 0:
        return "\n".join(f"{i}. {s}" for i, s in enumerate(items, 1))
    if v == 1:
        return "Remaining: " + "; ".join(f"({i}) {s}" for i, s in enumerate(items, 1))
    if v == 2:
        return " -> ".join(items)
    if len(items) == 1:
        return f"Next: {items[0]}. That is the last step."
    return f"Next: {items[0]}. After that: " + ", then ".join(items[1:]) + "."


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------
# An attempt is one round's tool call and what came of it:
#   item      index in the plan list of the step this call works on
#   dep       memory key the round looks up (the fact the step builds on)
#   tool, args, wrapped (an arg passed as a list), extras (added kwargs), prefix (a call before it)
#   result    the tool result text
#   ok        the call succeeded; believed: the agent treats it as a success (ok or ignored error)
#   fact      (key, value) the agent stores after it
#   diag      (cause kind, fix kind, arg) of the reflection that opened this round, if the round
#             retries a failed call


def _call_text(a: dict) -> str:
    parts = []
    for k, v in a["args"]:
        s = v if _NUMERIC.fullmatch(v) else '"' + v + '"'
        parts.append(f"{k}=[{s}]" if k == a["wrapped"] else f"{k}={s}")
    parts.extend(a["extras"])
    return a["prefix"] + a["tool"] + "(" + ", ".join(parts) + ")"


def _apply_fix(a: dict, fix: str) -> dict:
    b = dict(a)
    if fix == "rate_limit":
        b["extras"] = a["extras"] + ("retry_after=30",)
    elif fix == "auth":
        b["prefix"] = "refresh_token(); "
    elif fix == "bad_format":
        b["wrapped"] = None
    elif fix == "permission":
        b["extras"] = a["extras"] + ('as_user="svc-bot"',)
    elif fix == "server_error":
        b["extras"] = a["extras"] + ("page_size=50",)
    return b


def _error_text(kind: str, a: dict) -> str:
    return _ERRMSG[kind].format(arg=a["wrapped"] or a["args"][0][0], tool=a["tool"])


def _render_step(step: _Step, p: dict) -> dict:
    """The step's texts for parameters `p`."""
    return {
        "plan": step.plan.format_map(p), "tool": step.tool, "args": [(k, v.format_map(p)) for k, v in step.args],
        "result": step.result.format_map(p), "key": step.key.format_map(p), "value": step.value.format_map(p),
    }


def _attempts(rsteps: list[dict], prior_key: str, errors: dict[int, tuple[str, str | None]]) -> list[dict]:
    """The attempts of a trajectory that runs `rsteps` in order. Where errors[i] = (kind, first_fix),
    step i first fails with error `kind`; if `first_fix` is given, the agent first tries that fix
    (a misdiagnosis), which fails the same way; then it applies the right fix and succeeds."""
    out = []
    for i, rs in enumerate(rsteps):
        base = {
            "item": i, "dep": rsteps[i - 1]["key"] if i else prior_key, "tool": rs["tool"], "args": rs["args"],
            "wrapped": None, "extras": (), "prefix": "", "result": rs["result"], "ok": True, "believed": True,
            "fact": (rs["key"], rs["value"]), "diag": None,
        }
        if i in errors:
            kind, first_fix = errors[i]
            fail = dict(base, ok=False, believed=False, fact=None)
            if kind == "bad_format":
                fail["wrapped"] = next((k for k, v in rs["args"] if not _NUMERIC.fullmatch(v)), rs["args"][0][0])
            fail["result"] = _error_text(kind, fail)
            arg = fail["wrapped"] or rs["args"][0][0]
            out.append(fail)
            last = fail
            if first_fix is not None:
                last = _apply_fix(fail, first_fix)
                last.update(diag=(first_fix, first_fix, arg))
                out.append(last)
            retry = _apply_fix(last, kind)
            retry.update(result=rs["result"], ok=True, believed=True, fact=base["fact"], diag=(kind, kind, arg))
            out.append(retry)
        else:
            out.append(base)
    return out


def _render(items: list[str], attempts: list[dict], prior: tuple[str, str] | None,
            style: list[int], mem_over: dict[int, tuple] | None = None) -> list[dict[str, str]]:
    """The rounds of a trajectory, each a dict of round fields (see `data.trajectory`).

    `mem_over` maps a round to ("mr", key, value) (the memory returns this instead), ("ms", key,
    value) (the round stores this instead) or ("ms_none",) (the round stores nothing)."""
    memory = {prior[0]: prior[1]} if prior else {}
    mem_over = mem_over or {}
    rounds = []
    prev = None
    for i, a in enumerate(attempts):
        st = style[i]
        s0, s1, s2, s3, s4, s5, s6 = st % 3, (st >> 4) % 4, (st >> 8) % 3, (st >> 12) % 3, (st >> 16) % 3, (st >> 20) % 3, (st >> 24) % 3
        nxt = items[a["item"]]
        if prev is None:
            refl = _R_START[s0].format(next=nxt)
        elif not prev["believed"]:
            cause, fix, arg = a["diag"]
            cause = _CAUSE[cause][s2].format(arg=arg, tool=prev["tool"])
            fix = _FIX[fix][s3].format(arg=arg)
            if prev["diag"] is None:
                refl = _R_ERR[s0].format(tool=prev["tool"], cause=cause, fix=fix)
            else:  # the retry failed too
                refl = _R_AGAIN[s0].format(tool=prev["tool"], tried=_TRIED[prev["diag"][1]], cause=cause, fix=fix)
        else:
            k, v = prev["fact"]
            refl = _R_OK[s0].format(tool=prev["tool"], fact=f"{k} = {v}", next=nxt)
        key = a["dep"]
        over = mem_over.get(i)
        if over is not None and over[0] == "mr":
            mr = _MR_VAL[s5].format(key=over[1], value=over[2])
        else:
            val = memory.get(key)
            mr = _MR_NONE[s5].format(key=key) if val is None else _MR_VAL[s5].format(key=key, value=val)
        if over is not None and over[0] == "ms":
            memory[over[1]] = over[2]
            ms = _MS_VAL[s6].format(key=over[1], value=over[2])
        elif a["believed"] and a["fact"] is not None and not (over is not None and over[0] == "ms_none"):
            memory[a["fact"][0]] = a["fact"][1]
            ms = _MS_VAL[s6].format(key=a["fact"][0], value=a["fact"][1])
        else:
            ms = _MS_NONE[s6]
        rounds.append({
            "reflection": refl,
            "plan": _plan_text(items[a["item"]:], s1),
            "memory_query": _MQ[s4].format(key=key),
            "memory_result": mr,
            "action": _call_text(a),
            "observation": a["result"],
            "memory_store": ms,
        })
        prev = a
    return rounds


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


@dataclass
class _Task:
    rng: random.Random
    family: _Family
    params: dict
    steps: list[_Step]  # the steps this task runs (optional ones may be left out)
    rsteps: list[dict]
    errors: dict[int, tuple[str, str | None]]  # see `_attempts`
    task: str
    prior: tuple[str, str]
    prior_present: bool
    style: list[int]
    attempts: list[dict]
    items: list[str]

    def sibling_params(self) -> dict:
        """Parameters of another task of the same family (other entities and numbers)."""
        return self.family.sample(self.rng)


def _first_attempt(attempts: list[dict], item: int) -> int:
    return next(i for i, a in enumerate(attempts) if a["item"] == item)


def _consequence_error(a: dict) -> None:
    """The call fails because an input it needs is missing; the agent carries on regardless.
    (A call that already fails and is retried keeps its own error.)"""
    if not a["ok"]:
        return
    a["result"] = _ERRMSG["bad_format"].format(arg=a["args"][0][0], tool=a["tool"])
    a["ok"] = False
    a["believed"] = True


def _planner_fault(t: _Task, kind: str):
    n = len(t.items)
    atts = [dict(a) for a in t.attempts]
    items = list(t.items)
    rng = t.rng
    if kind == "missing":
        if n < 3:
            return None
        j = rng.randrange(1, n)
        atts = [a for a in atts if a["item"] != j]
        for a in atts:
            if a["item"] > j:
                a["item"] -= 1
        del items[j]
        if j < n - 1:
            _consequence_error(atts[_first_attempt(atts, j)])
        return items, atts, {}, t.prior_present
    if kind == "swap":
        j = rng.randrange(0, n - 1)
        first = [a for a in atts if a["item"] == j]
        second = [a for a in atts if a["item"] == j + 1]
        before = [a for a in atts if a["item"] < j]
        after = [a for a in atts if a["item"] > j + 1]
        for a in second:
            a["item"] = j
        for a in first:
            a["item"] = j + 1
        _consequence_error(second[0])
        items[j], items[j + 1] = items[j + 1], items[j]
        return items, before + second + first + after, {}, t.prior_present
    if kind == "sibling":
        for _ in range(4):
            sp = t.sibling_params()
            rsteps = [_render_step(s, sp) for s in t.steps]
            sib_items = [rs["plan"] for rs in rsteps]
            if sib_items != items:
                break
        else:
            return None
        atts = _attempts(rsteps, t.family.prior[0].format_map(sp), t.errors)
        return sib_items, atts, {}, t.prior_present
    if kind == "extra":
        other = rng.choice([f for f in FAMILIES if f is not t.family])
        rs = _render_step(rng.choice(other.steps), other.sample(rng))
        j = rng.randrange(1, n + 1)
        pos = len(atts) if j == n else _first_attempt(atts, j)
        for a in atts[pos:]:
            a["item"] += 1
        dep = atts[pos - 1]["fact"][0] if atts[pos - 1]["fact"] else atts[pos - 1]["dep"]
        extra = {
            "item": j, "dep": dep, "tool": rs["tool"], "args": rs["args"], "wrapped": None, "extras": (), "prefix": "",
            "result": rs["result"], "ok": True, "believed": True, "fact": (rs["key"], rs["value"]), "diag": None,
        }
        items.insert(j, rs["plan"])
        atts.insert(pos, extra)
        return items, atts, {}, t.prior_present
    raise ValueError(kind)


_SIDE_EFFECT_TOOLS = frozenset(
    ("create_booking", "create_refund", "create_order", "send_email", "create_event", "create_ticket", "http_post")
)


def _ok_attempts(atts: list[dict]) -> list[int]:
    return [i for i, a in enumerate(atts) if a["ok"] and a["diag"] is None]


def _executor_fault(t: _Task, kind: str):
    atts = [dict(a) for a in t.attempts]
    rng = t.rng
    if kind == "wrong_tool":
        i = rng.choice(_ok_attempts(atts))
        a = atts[i]
        # A tool that is the right one for a step of another task.
        family, step = rng.choice(_STEPS_BY_TOOL[rng.choice([x for x in _ALL_TOOLS if x != a["tool"]])])
        a["tool"] = step.tool
        if rng.random() < 0.5:
            # It rejects the arguments or the caller; the agent carries on regardless.
            a["ok"] = False
            a["result"] = _error_text(rng.choice(("bad_format", "permission")), a)
        else:
            # It does its own job and returns something that does not answer the step.
            a["result"] = step.result.format_map(family.sample(rng))
        return t.items, atts, {}, t.prior_present
    if kind == "duplicate_call":
        # A side-effecting call that had succeeded is sent again (as if it had failed): a second
        # booking, refund, order or email.
        cands = [i for i in _ok_attempts(atts) if atts[i]["tool"] in _SIDE_EFFECT_TOOLS]
        if not cands:
            return None
        i = rng.choice(cands)
        step = t.steps[atts[i]["item"]]
        fresh = t.sibling_params()
        p2 = dict(fresh, **{k: t.params[k] for k in step.arg_slots})
        dup = dict(atts[i], result=step.result.format_map(p2), fact=(step.key.format_map(p2), step.value.format_map(p2)))
        dup["dep"] = atts[i]["fact"][0]
        fix = rng.choice(_KINDS)
        if fix != "bad_format":
            dup = _apply_fix(dup, fix)
        atts.insert(i + 1, dup)
        return t.items, atts, {}, t.prior_present
    if kind == "wrong_args":
        # Either a call that went through first time, or a step that P only got through after a
        # transient error: there the faulty run has no error, just one call with a wrong argument.
        retries = [i for i, a in enumerate(atts) if a["diag"] is not None and a["ok"]]
        cands = retries if rng.random() < 0.5 else _ok_attempts(atts)
        rng.shuffle(cands)
        for i in cands:
            step = t.steps[atts[i]["item"]]
            slots = sorted(step.arg_slots)
            rng.shuffle(slots)
            for slot in slots:
                fresh = t.sibling_params()
                if fresh[slot] != t.params[slot]:
                    rs = _render_step(step, dict(t.params, **{slot: fresh[slot]}))
                    if rs["args"] == t.rsteps[atts[i]["item"]]["args"]:
                        continue
                    atts[i] = dict(atts[i], args=rs["args"], result=rs["result"], fact=(rs["key"], rs["value"]),
                                   diag=None, wrapped=None, extras=(), prefix="")
                    if i in retries:
                        atts = [a for j, a in enumerate(atts) if j == i or a["item"] != atts[i]["item"]]
                    return t.items, atts, {}, t.prior_present
        return None
    if kind == "ignored_error":
        if rng.random() < 0.5:
            # Drop the retry: the agent moves on after the error as if the call had worked.
            failed = [i for i, a in enumerate(atts) if not a["ok"] and a["diag"] is None]
            f = rng.choice(failed)
            item = atts[f]["item"]
            fact = t.attempts[max(i for i, a in enumerate(t.attempts) if a["item"] == item)]["fact"]
            atts[f] = dict(atts[f], believed=True, fact=fact)
            atts = [a for j, a in enumerate(atts) if j == f or a["item"] != item]
        else:
            i = rng.choice(_ok_attempts(atts))
            a = atts[i]
            a["ok"] = False
            a["result"] = _error_text(rng.choice(_KINDS), a)
        return t.items, atts, {}, t.prior_present
    raise ValueError(kind)


def _perturb_number(s: str, rng: random.Random) -> str:
    dec = len(s.split(".")[1]) if "." in s else 0
    x = float(s)
    for _ in range(10):
        f = rng.uniform(0.04, 0.3) * rng.choice((-1, 1))
        if dec:
            y = f"{max(x * (1 + f), 0.01):.{dec}f}"
        else:
            d = max(1, round(abs(x * f)))
            y = str(max(0, int(x) + (d if f > 0 or x - d < 0 else -d)))
        if y != s:
            return y
    return s + "1"


def _memory_lookups(t: _Task) -> list[tuple[str, str | None]]:
    """(key, value found) for every round of P."""
    memory = {t.prior[0]: t.prior[1]} if t.prior_present else {}
    out = []
    for a in t.attempts:
        out.append((a["dep"], memory.get(a["dep"])))
        if a["believed"] and a["fact"]:
            memory[a["fact"][0]] = a["fact"][1]
    return out


def _memory_fault(t: _Task, kind: str):
    rng = t.rng
    atts = [dict(a) for a in t.attempts]
    looks = _memory_lookups(t)
    found = [i for i, (_, v) in enumerate(looks) if v is not None]
    if kind == "stale":
        cands = [i for i in found if _NUMBER_IN_TEXT.search(looks[i][1])]
        if not cands:
            return None
        i = rng.choice(cands)
        key, val = looks[i]
        nums = list(_NUMBER_IN_TEXT.finditer(val))
        m = rng.choice(nums)
        new = _perturb_number(m.group(), rng)
        stale = val[: m.start()] + new + val[m.end():]
        # The agent acts on the stale number where its call uses it.
        a = atts[i]
        a["args"] = [(k, v.replace(m.group(), new) if v == m.group() else v) for k, v in a["args"]]
        return t.items, atts, {i: ("mr", key, stale)}, t.prior_present
    if kind == "other_entity":
        # Another entity's record of the same kind: for the looked-up fact, or where P's memory had
        # no note before the task started.
        cands = found + ([0] * len(found) if not t.prior_present else [])
        if not cands:
            return None
        i = rng.choice(cands)
        key = looks[i][0]
        sp = t.sibling_params()
        if key == t.prior[0]:
            k2, v2 = t.family.prior[0].format_map(sp), t.family.prior[1].format_map(sp)
        else:
            src = next(s for s, rs in zip(t.steps, t.rsteps) if rs["key"] == key)
            k2, v2 = src.key.format_map(sp), src.value.format_map(sp)
        if (k2, v2) == (key, looks[i][1]):
            return None
        return t.items, atts, {i: ("mr", k2, v2)}, t.prior_present
    if kind == "irrelevant":
        # A record that does not answer the lookup: another fact of this task, or (often where P's
        # memory had nothing) a note left by an unrelated task.
        i = 0 if (not t.prior_present and rng.random() < 0.6) else rng.randrange(len(atts))
        key = looks[i][0]
        if i == 0 and not t.prior_present:
            other = rng.choice([f for f in FAMILIES if f is not t.family])
            op = other.sample(rng)
            k2, v2 = other.prior[0].format_map(op), other.prior[1].format_map(op)
        else:
            # Only facts the agent could have stored by then.
            earlier = {a["fact"] for a in atts[:i] if a["believed"] and a["fact"]}
            if t.prior_present:
                earlier.add(t.prior)
            others = sorted(kv for kv in earlier if kv[0] != key)
            if not others:
                return None
            k2, v2 = rng.choice(others)
        return t.items, atts, {i: ("mr", k2, v2)}, t.prior_present
    if kind == "never_stored":
        needed = {a["dep"] for a in atts}
        cands = [i for i, a in enumerate(atts) if a["believed"] and a["fact"] and a["fact"][0] in needed]
        if not cands:
            return None
        i = rng.choice(cands)
        over: dict[int, tuple] = {}
        if i > 0 and looks[i][1] is not None and rng.random() < 0.5:
            # It stores again what it just looked up instead of the new fact.
            over[i] = ("ms", looks[i][0], looks[i][1])
        else:
            over[i] = ("ms_none",)
        if looks[i][1] is not None and rng.random() < 0.5:
            # The later lookup of the missing fact returns the nearest older record instead of nothing.
            later = next(j for j in range(i + 1, len(atts)) if atts[j]["dep"] == atts[i]["fact"][0])
            over[later] = ("mr", looks[i][0], looks[i][1])
        return t.items, atts, over, t.prior_present
    raise ValueError(kind)


def _reflection_fault(t: _Task, kind: str):
    rng = t.rng
    atts = [dict(a) for a in t.attempts]
    # The fault sits at the diagnosis that, in P, fixed the error; in N_k the retry it leads to fails
    # the same way and the agent moves on as if it had worked.
    fixes = [i for i, a in enumerate(atts) if a["diag"] is not None and a["ok"]]
    if kind == "repeat":
        # Only where P had a first fix that did not help: the reflection proposes it once more.
        fixes = [i for i in fixes if atts[i - 1]["diag"] is not None]
        if not fixes:
            return None
    r = rng.choice(fixes)
    fail, retry = atts[r - 1], atts[r]
    true_kind, _, arg = retry["diag"]
    if kind == "repeat":
        new = dict(fail)  # the same call as the one that just failed
        new["diag"] = (true_kind, fail["diag"][1], arg)
    else:
        tried = fail["diag"][1] if fail["diag"] else None
        wrong = rng.choice([k for k in _KINDS if k != true_kind and k != tried])
        new = _apply_fix(fail, wrong)
        new["diag"] = (wrong, wrong, arg)
    new.update(result=fail["result"], ok=False, believed=True, fact=retry["fact"])
    atts[r] = new
    return t.items, atts, {}, t.prior_present


_FAULTS = {
    "planner": (_planner_fault, ("missing", "swap", "sibling", "extra")),
    "executor": (_executor_fault, ("wrong_tool", "wrong_args", "ignored_error", "duplicate_call")),
    "memory": (_memory_fault, ("stale", "other_entity", "irrelevant", "never_stored")),
    "reflection": (_reflection_fault, ("wrong_cause", "repeat")),
}


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


def _make_task(seed: int, index: int, attempt: int = 0) -> _Task:
    rng = random.Random(f"synth:{seed}:{index}" + (f":{attempt}" if attempt else ""))
    family = FAMILIES[rng.randrange(len(FAMILIES))]
    params = family.sample(rng)
    steps = [s for s in family.steps if not (s.optional and rng.random() < 0.35)]
    rsteps = [_render_step(s, params) for s in steps]
    n_err = 1 if rng.random() < 0.6 else 2
    errors = {}
    for i in sorted(rng.sample(range(len(steps)), n_err)):
        kind = rng.choice(_KINDS)
        errors[i] = (kind, rng.choice([k for k in _KINDS if k != kind]) if rng.random() < 0.4 else None)
    prior = (family.prior[0].format_map(params), family.prior[1].format_map(params))
    attempts = _attempts(rsteps, prior[0], errors)
    style = [rng.getrandbits(28) for _ in range(len(attempts) + 2)]
    return _Task(
        rng=rng, family=family, params=params, steps=steps, rsteps=rsteps, errors=errors,
        task=family.task.format_map(params), prior=prior, prior_present=rng.random() < 0.5, style=style,
        attempts=attempts, items=[rs["plan"] for rs in rsteps],
    )


_MIN_ROUNDS = 3


def _negative(t: _Task, module: str, pos_text: str) -> tuple[str, str, str]:
    fn, kinds = _FAULTS[module]
    order = list(kinds)
    t.rng.shuffle(order)
    for kind in order:
        for _ in range(3):
            made = fn(t, kind)
            if made is None:
                break
            items, atts, mem_over, prior_present = made
            if len(atts) < _MIN_ROUNDS:
                break
            style = t.style + [t.rng.getrandbits(28) for _ in range(len(atts) - len(t.style))]
            rounds = _render(items, atts, t.prior if prior_present else None, style, mem_over)
            text = render_module(rounds, DEFAULT_MODULE_FIELDS[module])
            if text != pos_text:
                return render_context(t.task, rounds), text, kind
    raise RuntimeError(f"could not make a {module} fault for {t.task!r}")  # pragma: no cover


def _generate(n_pairs: int, seed: int, modules: Sequence[str], with_fault: bool) -> list[dict]:
    modules = tuple(modules)
    if not modules or len(set(modules)) != len(modules):
        raise ValueError(f"modules must be distinct and not empty, got {modules}")
    unknown = [m for m in modules if m not in DEFAULT_MODULE_FIELDS]
    if unknown:
        raise ValueError(f"unknown modules {unknown}; known: {', '.join(DEFAULT_MODULE_FIELDS)}")
    if n_pairs < 0:
        raise ValueError("n_pairs must be >= 0")
    pairs: list[dict] = []
    m = len(modules)
    seen_tasks: set[str] = set()
    for ti in range((n_pairs + m - 1) // m):
        t = _make_task(seed, ti)
        attempt = 0
        while t.task in seen_tasks:  # task strings are distinct
            attempt += 1
            t = _make_task(seed, ti, attempt)
        seen_tasks.add(t.task)
        prior = t.prior if t.prior_present else None
        rounds = _render(t.items, t.attempts, prior, t.style)
        pos_context = render_context(t.task, rounds)
        for module in modules[: min(m, n_pairs - ti * m)]:
            pos_text = render_module(rounds, DEFAULT_MODULE_FIELDS[module])
            neg_context, neg_text, kind = _negative(t, module, pos_text)
            pair = {
                "pair_id": f"synth-s{seed}-t{ti:06d}-{module}",
                "target_module": module,
                "task": t.task,
                "task_family": t.family.name,
                "positive": {"trajectory_full_context": pos_context, "module_k_all_rounds": pos_text, "outcome": 1},
                "negative": {"trajectory_full_context": neg_context, "module_k_all_rounds": neg_text, "outcome": 0},
            }
            if with_fault:
                pair["fault"] = f"{module}/{kind}"
            pairs.append(pair)
    return pairs


def generate_pairs(n_pairs: int, seed: int = 0, modules: Sequence[str] = DEFAULT_MODULES) -> list[dict]:
    """`n_pairs` hard synthetic preference pairs, spread evenly over `modules` (counts differ by at
    most one); pair i belongs to task i // len(modules) and module modules[i % len(modules)].
    Deterministic in `seed`."""
    return _generate(n_pairs, seed, modules, with_fault=False)
