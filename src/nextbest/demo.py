"""Create a local API key and print how to call the demo server (run by `make demo`)."""

from __future__ import annotations

import argparse
import json
import shlex

from rich.console import Console

from nextbest import registry
from nextbest.service.apikeys import add_key_to_file
from nextbest.service.picks import picks_frame
from nextbest.settings import get_settings

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
    # Show an HCP who has something worth doing, so the first call is not empty.
    sample = picks_frame(model, hcp_ids=list(model.hcps["hcp_id"][:200]), k=1)
    hcp_id = str(sample["hcp_id"].iat[0]) if len(sample) else str(model.hcps["hcp_id"].iat[0])
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
    console.print(f"\nOpenAPI docs: {base}/docs    health: {base}/healthz\n")
    return curl


if __name__ == "__main__":
    main()
