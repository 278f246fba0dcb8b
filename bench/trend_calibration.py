"""Are the trend probabilities calibrated? Simulated worlds with a known outcome, fed through the real
evidence and state code, scored at the horizon.

Each world is one trend (baseline ``p0``) whose outcome ``Y`` is drawn from the baseline. Over 60 days
stories arrive; each is reported by ``n`` independent outlets (1–4, independent of ``Y``) and copied
by up to 6 syndicating outlets (near-identical text), and some are retold later by one outlet. A story
is "up" with probability ``q1(n)`` if ``Y`` and ``q0(n)`` if not, chosen so that its exact likelihood
ratio is ``LR^corroboration(n)`` — a story a single outlet reports is weaker evidence than one three
outlets confirm. The oracle is the exact Bayesian posterior from the distinct stories; the baseline
predicts ``p0``; the naive sum adds ``±ln LR`` for every item (copies and retellings included), as
the anchor tracker does. Ours reads only the database: items, embeddings and events.

    python bench/trend_calibration.py --worlds 300
"""

import argparse
import json
import math
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, scratch_database  # noqa: E402

from observatory_assets.defs.trends.catalog import sync_trends  # noqa: E402
from observatory_assets.defs.trends.evidence import update_evidence  # noqa: E402
from observatory_assets.defs.trends.ledger import log_odds_at  # noqa: E402
from resources.postgres import engine_for  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.support.trend_world import bulk_world, story_vector  # noqa: E402

P0, LR_UP, LR_DOWN = 0.3, 4.0, 3.0
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 60
HORIZON = START + timedelta(days=DAYS + 1)

TREND = """\
name: world-{k}
title: Simulated world {k}
question: Does world {k} end with the outcome?
horizon: {horizon}
baseline_probability: {p0}
half_life_days: 36500
indicators:
  - name: for
    direction: up
    likelihood_ratio: {up}
    terms:
      en: ["signal{k} rising"]
  - name: against
    direction: down
    likelihood_ratio: {down}
    terms:
      en: ["signal{k} falling"]
"""


def corroboration(n: int) -> float:
    return 1 - 0.5 ** (n / 2)


def story_probabilities(n: int) -> tuple[float, float]:
    """q0, q1 = P(up | no), P(up | yes) with ln(q1/q0) = c·ln LR_up and ln((1−q0)/(1−q1)) = c·ln LR_down."""
    a, b = corroboration(n) * math.log(LR_UP), corroboration(n) * math.log(LR_DOWN)
    q0 = (math.exp(b) - 1) / (math.exp(a + b) - 1)
    return q0, q0 * math.exp(a)


def simulate(worlds: int, seed: int):
    rng = np.random.default_rng(seed)
    items, events, outcomes, oracle, naive = [], [], [], [], []
    for k in range(worlds):
        y = rng.random() < P0
        log_odds, naive_sum = math.log(P0 / (1 - P0)), math.log(P0 / (1 - P0))
        for s in range(rng.poisson(6)):
            n, copies = int(rng.integers(1, 5)), int(rng.integers(0, 7))
            q0, q1 = story_probabilities(n)
            up = rng.random() < (q1 if y else q0)
            sign, lr = (1, LR_UP) if up else (-1, LR_DOWN)
            log_odds += sign * corroboration(n) * math.log(lr)
            at = START + timedelta(days=float(rng.uniform(0, DAYS - 5)))
            key = f"w{k}s{s}"
            phrase = f"signal{k} {'rising' if up else 'falling'}"
            members = []
            for r in range(n):
                members.append(len(items))
                items.append({"source": f"outlet{r}-{key}", "title": f"{key} report {r}", "language": "en",
                              "body": f"{phrase}: report {r} of story {key}", "at": at + timedelta(minutes=r),
                              "vector": story_vector(key, noise=0.8, noise_key=f"{key}r{r}")})  # fmt: skip
            for c in range(copies):
                original = items[members[c % n]]
                members.append(len(items))
                items.append({**original, "source": f"syndicator{c}-{key}", "at": original["at"] + timedelta(hours=1),
                              "vector": story_vector(original["title"] + key, noise=0.05,
                                                     noise_key=f"{key}c{c}")})  # fmt: skip
            for m in members[:n]:
                items[m]["vector"] = story_vector(items[m]["title"] + key)
            events.append(members)
            naive_sum += sign * math.log(lr) * len(members)
            if rng.random() < 0.3:  # retold once by another outlet, days later: no new information
                events.append([len(items)])
                retold = items[members[0]]
                items.append({**retold, "source": f"reteller-{key}", "title": f"{key} retold",
                              "at": min(retold["at"] + timedelta(days=3), HORIZON - timedelta(days=1)),
                              "vector": np.mean([items[m]["vector"] for m in members], axis=0)})  # fmt: skip
                naive_sum += sign * math.log(lr)
        outcomes.append(float(y))
        oracle.append(log_odds)
        naive.append(naive_sum)
    return items, events, np.asarray(outcomes), np.asarray(oracle), np.asarray(naive)


def scores(outcomes: np.ndarray, log_odds: np.ndarray) -> tuple[float, float]:
    p = np.clip(1 / (1 + np.exp(-log_odds)), 1e-6, 1 - 1e-6)
    brier = float(np.mean((p - outcomes) ** 2))
    loss = float(-np.mean(outcomes * np.log(p) + (1 - outcomes) * np.log(1 - p)))
    return round(brier, 5), round(loss, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    items, events, outcomes, oracle, naive = simulate(args.worlds, args.seed)
    sources = {item["source"]: 1.0 for item in items}
    with scratch_database() as url, tempfile.TemporaryDirectory() as folder:
        engine = engine_for(url)
        for k in range(args.worlds):
            Path(folder, f"world-{k}.yaml").write_text(
                TREND.format(k=k, p0=P0, up=LR_UP, down=LR_DOWN, horizon=HORIZON.date())
            )
        bulk_world(engine, sources, items, events)
        sync_trends(engine, folder)
        started = time.perf_counter()
        result = update_evidence(engine, now=HORIZON)
        seconds = time.perf_counter() - started
        with engine.begin() as conn:
            ids = dict(conn.execute(text("SELECT name, id FROM trends")).all())
            ours_map = log_odds_at(conn, [(ids[f"world-{k}"], HORIZON) for k in range(args.worlds)])
        ours = np.asarray([ours_map[(ids[f"world-{k}"], HORIZON)] for k in range(args.worlds)])
    baseline = np.full(args.worlds, math.log(P0 / (1 - P0)))
    (brier, loss), (brier_oracle, loss_oracle) = scores(outcomes, ours), scores(outcomes, oracle)
    brier_baseline, loss_baseline = scores(outcomes, baseline)
    brier_naive, loss_naive = scores(outcomes, naive)
    print(json.dumps({
        "worlds": args.worlds, "items": len(items), "events": len(events), "outcome_rate": float(outcomes.mean()),
        "evidence_rows": result.added, "evidence_seconds": round(seconds, 2),
        "brier": brier, "brier_oracle": brier_oracle, "brier_baseline": brier_baseline,
        "brier_naive_sum": brier_naive,
        "log_loss": loss, "log_loss_oracle": loss_oracle, "log_loss_baseline": loss_baseline,
        "log_loss_naive_sum": loss_naive,
        "brier_vs_oracle": round(brier / brier_oracle, 3),
        "target_met": brier <= 1.1 * brier_oracle and brier < brier_baseline and brier < brier_naive,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
