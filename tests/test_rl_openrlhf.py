"""OpenRLHF 0.11.2's own reward client (`SingleTurnAgentExecutor`, remote_rm_url) against `pipeline
serve` in a subprocess: the rewards it receives equal the Python API's, also for a prompt it cuts from
the left to fit max_length, and a query the server refuses leaves the reason in the server's log
(the client logs only the status line). Runs in the RL clients' environment (tests/rl_env.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from rl_env import rl_python, run_in_rl_env
from test_serve import free_port, request

from pipeline.rewards import load

pytestmark = pytest.mark.slow  # a server subprocess and the RL environment's python

SHORT = "Task: rename the report files by date.\n[Round 1]\n"
LONG = (
    "<module>executor</module>Task: move the nightly backup job from the old host to the new cluster, keep the "
    "retention rules, and make sure the monitoring alerts still fire when a backup fails.\n"
    + "".join(f"[Round {r}]\nObservation: step {r} of the migration finished; {r * 3} files copied, no errors.\n" for r in range(1, 9))
)
CASES = [
    # (a) a short prompt, kept whole; the label names the module
    {"prompt": SHORT, "label": "planner", "response": "<plan>list the files, read their dates, rename</plan>", "max_length": 512},
    # (b) a long prompt cut to its last 24 tokens; its <module> tag is cut off with the rest, and the label is a reference answer
    {"prompt": LONG, "label": "The job runs on the cluster.", "response": "<action>scheduler add backup --at 02:00</action>", "keep_prompt_tokens": 24},
    # (c) refused: a label that looks like a module name the checkpoint lacks, and nothing else names one
    {"prompt": SHORT, "label": "critic", "response": "<plan>p</plan>", "max_length": 512},
]


@pytest.fixture(scope="module")
def server(reward_checkpoint, tmp_path_factory):
    """`pipeline serve` of the shared checkpoint on a free port; yields (url, path of its log)."""
    rl_python()  # skip (or fail under RL_CLIENTS_REQUIRED=1) before starting anything
    log = tmp_path_factory.mktemp("openrlhf-server") / "server.log"
    script = shutil.which("pipeline", path=str(Path(sys.executable).parent))
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [script, "serve", str(reward_checkpoint / "checkpoint"), "--port", str(port), "--device", "cpu"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                assert request(f"{url}/health")[0] == 200
                break
            except urllib.error.URLError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield url, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def driven(server, tmp_path_factory):
    """What OpenRLHF's client got for each of CASES."""
    url, _ = server
    work = tmp_path_factory.mktemp("openrlhf-client")
    (work / "cases.json").write_text(json.dumps(CASES))
    result = run_in_rl_env("tests/rl_clients/drive_openrlhf.py", "--url", f"{url}/get_reward", "--cases", str(work / "cases.json"), "--work", str(work))
    assert result.returncode == 0, result.stderr[-3000:]
    *client_log, answers = result.stdout.splitlines()  # OpenRLHF's logger writes to stdout too
    return json.loads(answers), "\n".join(client_log)


def api_reward(scorer, context: str, module_text: str, module: str) -> float:
    return float(scorer.score([context], [module_text], [module])[0])


@pytest.fixture(scope="module")
def scorer(reward_checkpoint):
    return load(reward_checkpoint / "checkpoint", device="cpu")


def test_a_short_prompt_gets_the_api_reward(driven, scorer):
    short = driven[0][0]
    assert short["kept_prompt_tokens"] == short["prompt_tokens"] and short["query"] == SHORT + CASES[0]["response"]
    assert short["reward"] == pytest.approx([api_reward(scorer, SHORT, CASES[0]["response"], "planner")], abs=1e-5)
    assert short["extra_logs"]["prompt_truncated"] == [0] and short["extra_logs"]["module_id"] == [scorer.modules.index("planner")]


def test_a_prompt_openrlhf_cuts_from_the_left_gets_the_reward_of_the_whole_prompt_and_is_flagged(driven, scorer, server):
    cut = driven[0][1]
    assert cut["kept_prompt_tokens"] == CASES[1]["keep_prompt_tokens"] < cut["prompt_tokens"]
    assert LONG not in cut["query"] and cut["query"].endswith(CASES[1]["response"])  # the query holds only the prompt's tail
    context = LONG.replace("<module>executor</module>", "")
    expected = api_reward(scorer, context, CASES[1]["response"], "executor")
    assert cut["reward"] is not None and cut["reward"] == pytest.approx([expected], abs=1e-5)
    assert cut["extra_logs"]["prompt_truncated"] == [1] and cut["extra_logs"]["module_id"] == [scorer.modules.index("executor")]
    # the tail as context would be another reward: the whole prompt is what was scored
    tail = cut["query"][: -len(CASES[1]["response"])]
    assert abs(api_reward(scorer, tail, CASES[1]["response"], "executor") - expected) > 1e-4
    assert "1 of 1 queries held only a tail of their prompt" in server[1].read_text()


def test_a_refused_query_leaves_its_reason_in_the_server_log(driven, server):
    refused, client_log = driven[0][2], driven[1]
    assert refused["reward"] is None and refused["extra_logs"] == {}  # OpenRLHF gave up after its retries
    assert "422" in client_log and "critic" not in client_log  # ... and logged the status line only
    log = server[1].read_text()
    reasons = [line for line in log.splitlines() if line.startswith("422 POST /get_reward (") and "labels[0]: unknown module 'critic'" in line]
    assert len(reasons) == 5, log  # one per retry of OpenRLHF's, each with the request's size
    assert all(" bytes, 1 query): " in line for line in reasons)
