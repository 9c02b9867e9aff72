"""The 25 parametrised task families of the synthetic data, and the samplers of their parameters.

A family is a task template, a note memory may hold before the task starts, and 3-4 steps (plan
phrase, tool call, result, and the fact memory keeps); a task is the family filled in with
parameters its sampler draws: names, places, amounts, ids. A sibling task (same family, other
parameters) is what several faults borrow from.
"""

import random
import re
import string
from dataclasses import dataclass

_FORMATTER = string.Formatter()


def _slots(template: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in _FORMATTER.parse(template) if name)


@dataclass(frozen=True)
class Step:
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
class Family:
    name: str
    sample: object  # Callable[[random.Random], dict[str, str]]
    task: str
    prior: tuple[str, str]  # a note memory may hold before the task starts (key, value)
    steps: tuple[Step, ...]


def _S(plan, tool, args, result, key, value, optional=False) -> Step:
    return Step(plan, tool, tuple(args.items()), result, key, value, optional)


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


FAMILIES: tuple[Family, ...] = (
    Family("flight_booking", _s_flight,
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
    Family("invoice_reconciliation", _s_invoice,
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
    Family("bug_triage", _s_bug,
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
    Family("data_cleaning", _s_cleaning,
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
    Family("literature_search", _s_literature,
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
    Family("calendar_scheduling", _s_calendar,
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
    Family("inventory_restock", _s_restock,
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
    Family("web_scraping", _s_scraping,
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
    Family("sql_report", _s_report,
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
    Family("email_triage", _s_email,
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
    Family("recipe_scaling", _s_recipe,
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
    Family("travel_itinerary", _s_trip,
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
    Family("code_refactor", _s_refactor,
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
    Family("customer_refund", _s_refund,
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
    Family("log_analysis", _s_logs,
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
    Family("expense_report", _s_expense,
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
    Family("dependency_upgrade", _s_upgrade,
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
    Family("account_onboarding", _s_onboard,
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
    Family("price_monitoring", _s_price,
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
    Family("shipment_tracking", _s_shipment,
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
    Family("database_backup", _s_backup,
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
    Family("survey_analysis", _s_survey,
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
    Family("meeting_notes", _s_notes,
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
    Family("doc_translation", _s_translate,
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
    Family("key_rotation", _s_rotate,
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
STEPS_BY_TOOL: dict[str, list[tuple[Family, Step]]] = {}
for _f in FAMILIES:
    for _s in _f.steps:
        STEPS_BY_TOOL.setdefault(_s.tool, []).append((_f, _s))
# A tool appears once per step that uses it, so a wrong tool is drawn as often as it is used.
ALL_TOOLS: tuple[str, ...] = tuple(sorted(tool for tool, uses in STEPS_BY_TOOL.items() for _ in uses))


def render_step(step: Step, p: dict) -> dict:
    """The step's texts for parameters `p`."""
    return {
        "plan": step.plan.format_map(p), "tool": step.tool, "args": [(k, v.format_map(p)) for k, v in step.args],
        "result": step.result.format_map(p), "key": step.key.format_map(p), "value": step.value.format_map(p),
    }
