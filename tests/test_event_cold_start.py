"""A fresh installation groups its very first items: three outlets telling one story become one event,
through the real ``observatory`` CLI (collect ×3 → ingest → enrich → events)."""

import json
import subprocess

from tests.support.helpers import ROOT

STORY = "Harbour bridge in Aarhus collapses after storm"
TELLINGS = {
    "aarhus-daily": (STORY, "A harbour bridge in Aarhus collapsed on Sunday night after a severe storm."),
    "nordic-wire": (f"{STORY} - live updates", "The harbour bridge in Aarhus collapsed on Sunday night after a storm."),
    "ritzau-feed": (f"{STORY} (Ritzau)", "A harbour bridge in Aarhus has collapsed after Sunday night's severe storm."),
}


def test_three_tellings_of_one_story_on_a_fresh_home_form_one_event(dagster_env, tmp_path):
    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=ROOT, env=dagster_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    for n, (source, (title, body)) in enumerate(TELLINGS.items()):
        payload = tmp_path / f"{source}.jsonl"
        record = {"id": f"{source}-1", "title": title, "text": body, "published_at": f"2026-11-29T2{n}:15:00Z"}
        payload.write_text(json.dumps(record) + "\n", encoding="utf-8")
        run("observatory", "collect", "--file", str(payload), "--source", source)
    run("observatory", "ingest")
    assert "FAILED" not in run("observatory", "enrich")
    listing = run("observatory", "events").strip().splitlines()
    assert len(listing) == 2, listing  # the header and one event
    event, items, sources = listing[1].split()[:3]
    assert (items, sources) == ("3", "3")
