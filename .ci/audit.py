"""Audit the runtime requirements for known vulnerabilities with pip-audit.

    python .ci/audit.py requirements.txt

Fails (exit 1) when a requirement has a known vulnerability, listing each with the versions that
fix it. When the vulnerability service cannot be reached (no route to PyPI's JSON API or OSV, or
a mirror that serves packages but not advisories), pip-audit skips the packages it could not look
up; that is said plainly and is not a failure, so CI without that access still runs its tests.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main(requirements: str) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-r", requirements, "--format", "json", "--progress-spinner", "off"],
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        network = ("ConnectionError", "NameResolutionError", "Max retries exceeded", "timed out", "Temporary failure")
        if any(word in done.stderr for word in network):
            print("pip-audit: the vulnerability service is unreachable from this machine; dependencies NOT audited.")
            print(done.stderr.strip().splitlines()[-1])
            return 0
        print(done.stderr, file=sys.stderr)
        return done.returncode or 1
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            print(f"VULNERABLE {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixes})")
    audited = len(dependencies) - len(skipped)
    print(
        f"pip-audit: {audited} of {len(dependencies)} packages audited, {len(vulnerable)} with known vulnerabilities."
    )
    if skipped:
        print(
            f"pip-audit: {len(skipped)} packages could not be looked up (e.g. {skipped[0]['skip_reason']}); "
            "the vulnerability service is unreachable from here or the index is a mirror without advisories."
        )
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.txt"))
