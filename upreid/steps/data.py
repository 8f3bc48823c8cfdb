"""Step ``data``: generate or check every dataset, write the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upreid.io import atomic_write_json
from upreid.params import Params, to_dict
from upreid.pipeline import Paths, listing_digest


def run_data(params: Params, root: str | Path | None = None) -> dict[str, Any]:
    """Generate (``data.source: synth``) or check (``disk``) every dataset; write the manifest
    the later steps depend on, and the contact sheet."""
    from upreid.data.readers import READERS, check_dataset, read_pool

    paths = Paths(params, root)
    if params.data.source == "synth":
        from upreid.data.synth import synthesize, write_contact_sheet

        synthesize(params.data, paths.data, inside=paths.root)
        write_contact_sheet(
            paths.dataset("market1501"), paths.reports / "figures" / "contact_sheet.png"
        )
    summary: dict[str, Any] = {
        "source": params.data.source,
        "root": str(params.data.root),
        "params": to_dict(params.data),
    }
    summary["luperson"] = {"images": len(read_pool(paths.dataset("luperson")))}
    for name in READERS:
        if paths.dataset(name).exists():
            summary[name] = {
                **check_dataset(name, paths.dataset(name)),
                "root": str(Path(params.data.root) / name),
            }  # as in params
    summary["listing"] = listing_digest(paths.data)
    atomic_write_json(paths.manifest, summary)
    return summary
