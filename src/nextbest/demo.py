"""Create a local API key and print how to call the demo server (run by `make demo`)."""

from __future__ import annotations

import argparse
import json
import shlex

from rich.console import Console

from nextbest import registry
from nextbest.clock import utc_now
from nextbest.learning.scoring import ScoringModel
from nextbest.policy.exploration import HOLDOUT_SALT, holdout_draw
from nextbest.service.apikeys import add_key_to_file
from nextbest.service.picks import file_picks, picks_frame
from nextbest.settings import Settings, get_settings

DEMO_KEY_NAME = "demo-admin"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    settings = get_settings()
    model, version = registry.load_alias(settings)
    # A fresh key each run; the key file keeps only its SHA-256.
    key = add_key_to_file(
        settings.resolved_api_keys_file, name=DEMO_KEY_NAME, role="admin", replace=True
    )
    hcp_id = sample_hcp(settings, model, version)
    base = f"http://127.0.0.1:{args.port}"
    body = json.dumps({"hcp_id": hcp_id, "k": 3})
    curl = (
        f"curl -s -X POST {base}/v1/recommendations "
        f"-H {shlex.quote('Authorization: Bearer ' + key)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
    # Not wrapped by Rich (at 80 columns when not on a terminal): a path or address
    # split over two lines cannot be copied.
    console = Console(soft_wrap=True)
    console.print(f"\n[bold]nextbest demo[/bold]: serving model version {version} on {base}")
    console.print(
        f"API key '{DEMO_KEY_NAME}' (role admin) created; only its SHA-256 is stored in "
        f"{settings.resolved_api_keys_file}. Ask for the next best actions of one HCP:\n"
    )
    print(curl, flush=True)
    elsewhere = "" if args.port == 8000 else f" (they call port 8000, this server {args.port})"
    console.print(
        f"\nThe README's examples send this key as $KEY{elsewhere}; set it in the shell "
        "you run them from:"
    )
    print(f"export KEY={shlex.quote(key)}", flush=True)
    console.print(
        f"\nOpenAPI docs: {base}/docs    health: {base}/healthz    "
        f"metrics (with the key): {base}/metrics\n"
    )
    return curl


def sample_hcp(settings: Settings, model: ScoringModel, version: str, *, among: int = 200) -> str:
    """An HCP of the model's first ``among`` whose first call gets an item: one that the
    serving rules and the live contact history leave something worth doing for
    (a demo run again after the README's opt-out of H000001, or after calls that
    filled an HCP's caps, names another), and that is not in this period's randomized
    holdout. The first HCP when none is."""
    candidates = [str(hcp_id) for hcp_id in model.hcps["hcp_id"][:among]]
    try:
        picks = file_picks(settings, model, version=version, hcp_ids=candidates, k=1)
    except Exception:
        # The rules file or the log cannot be read (a misspelt NEXTBEST_RULES_FILE, a
        # database that is down): `nextbest serve`, run next, says what is wrong and
        # stops; the sample falls back to the model's own choice.
        picks = picks_frame(model, hcp_ids=candidates, k=1)
    with_pick = set(picks["hcp_id"].astype(str))
    today = utc_now().date()

    def held_out(hcp_id: str) -> bool:
        if not settings.holdout_days:  # drawn per request: nothing to avoid
            return False
        draw = holdout_draw(hcp_id, today, days=settings.holdout_days, salt=HOLDOUT_SALT)
        return draw < settings.holdout_rate

    return next(
        (hcp_id for hcp_id in candidates if hcp_id in with_pick and not held_out(hcp_id)),
        candidates[0],
    )


if __name__ == "__main__":
    main()
