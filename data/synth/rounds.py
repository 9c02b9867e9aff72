"""From a task's steps to the rounds of a trajectory: the attempts (tool calls, their errors,
retries and fixes) and the round fields each attempt is written as.

An attempt is one round's tool call and what came of it (its fields are listed below);
`render_rounds` turns a list of attempts into round dicts (`data.trajectory.ROUND_FIELDS`), with the
reflection, plan and memory sections that go with each call. The text itself is written by
`data.trajectory`. Every sentence kind has several paraphrases; which one a round uses is drawn
once per task and round (`style`), so a positive and its negatives share their phrasing.
"""

import re
from collections.abc import Sequence

# Error kinds, and the sentence templates (several paraphrases per sentence kind).
ERROR_KINDS = ("timeout", "rate_limit", "auth", "bad_format", "permission", "server_error")
ERROR_MESSAGES = {
    "timeout": "error 504: gateway timeout after 30s",
    "rate_limit": "error 429: rate limit exceeded, retry later",
    "auth": "error 401: session token expired",
    "bad_format": "error 400: invalid value for '{arg}'",
    "permission": "error 403: {tool} requires write permission",
    "server_error": "error 500: internal error while processing the request",
}
CAUSES = {
    "timeout": ("the service timed out", "the gateway timed out before answering", "the request ran past the 30s limit"),
    "rate_limit": ("we hit the rate limit", "too many requests went out too quickly", "the API is throttling us"),
    "auth": ("the session token expired", "our credentials are no longer valid", "the auth session lapsed"),
    "bad_format": ("the {arg} argument was malformed", "{arg} was passed as a list instead of a single value", "the value for {arg} had the wrong shape"),
    "permission": ("the default user lacks write permission", "{tool} needs elevated rights", "the account may not call {tool}"),
    "server_error": ("the backend crashed on an oversized request", "the server choked on too many items at once", "the request was too large for the server"),
}
FIXES = {
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


def apply_fix(a: dict, fix: str) -> dict:
    """The call of attempt `a` changed the way the fix for error kind `fix` changes it."""
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


def error_text(kind: str, a: dict) -> str:
    """The tool result of attempt `a` failing with error `kind`."""
    return ERROR_MESSAGES[kind].format(arg=a["wrapped"] or a["args"][0][0], tool=a["tool"])


def make_attempts(rsteps: list[dict], prior_key: str, errors: dict[int, tuple[str, str | None]]) -> list[dict]:
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
            fail["result"] = error_text(kind, fail)
            arg = fail["wrapped"] or rs["args"][0][0]
            out.append(fail)
            last = fail
            if first_fix is not None:
                last = apply_fix(fail, first_fix)
                last.update(diag=(first_fix, first_fix, arg))
                out.append(last)
            retry = apply_fix(last, kind)
            retry.update(result=rs["result"], ok=True, believed=True, fact=base["fact"], diag=(kind, kind, arg))
            out.append(retry)
        else:
            out.append(base)
    return out


def render_rounds(
    items: list[str], attempts: list[dict], prior: tuple[str, str] | None, style: list[int], mem_over: dict[int, tuple] | None = None
) -> list[dict[str, str]]:
    """The rounds of a trajectory, each a dict of round fields (see `data.trajectory`): `items` is
    the plan, `prior` the note memory holds before the first round (or None), `style` the
    paraphrase choices of each round. `mem_over` maps a round to ("mr", key, value) (the memory returns this instead), ("ms", key,
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
            cause = CAUSES[cause][s2].format(arg=arg, tool=prev["tool"])
            fix = FIXES[fix][s3].format(arg=arg)
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
