"""One line per row of a `resnet-ablate bench --json` result read from stdin (used by h200.sh)."""

import json
import sys

for r in json.loads(sys.stdin.read())["rows"]:
    mem = f"{r['peak_mem_gb']:.2f}/{r['reserved_gb']:.2f} GB" if r.get("peak_mem_gb") else ""
    print(
        f"  {r['model']:<11} {r['setup']:<36} {r['jobs']}x{r.get('streams', 1)}x{r.get('seeds', 1)} {r['images_per_s']:>9,.0f} img/s "
        f"{r['ms_per_step']:6.1f} ms {mem} warm {r.get('warmup_compile_s', 0):.1f}s x{r.get('x_baseline') or 0:.2f}"
    )
