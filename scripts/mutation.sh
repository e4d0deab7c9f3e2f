#!/usr/bin/env bash
# Mutation testing of the pure stages against the fast unit tests ([tool.mutmut] in pyproject.toml; TESTING.md).
#
#   scripts/mutation.sh                      # every mutant (about 30 min on 2 cores; later runs redo only what changed)
#   scripts/mutation.sh 'addon.capture.clients*'   # only these mutants
#
# mutmut works in a scratch copy (MUTATION_DIR, default $TMPDIR/captcha-mutation), never in the working tree; its
# results stay there between runs. MUTATION_TIMEOUT (seconds, default 3600) bounds the run, JOBS the processes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${MUTATION_DIR:-${TMPDIR:-/tmp}/captcha-mutation}"
mkdir -p "$work/main"
# The real samples sit beside the project; some unit tests read them.
[ -d "$root/../shared" ] && ln -sfn "$(cd "$root/../shared" && pwd)" "$work/shared"
cd "$work/main"
rm -rf addon scripts tests
cp -r "$root/addon" "$root/scripts" "$root/tests" "$root/pyproject.toml" .
find . -name __pycache__ -prune -exec rm -rf {} +
ln -sfn "$root/.venv" .venv
status=0
timeout "${MUTATION_TIMEOUT:-3600}" .venv/bin/mutmut run --max-children "${JOBS:-2}" "$@" > mutmut-run.log 2>&1 || status=$?
echo "survivors:"
.venv/bin/mutmut results | grep -E ': (survived|suspicious|no tests)$' || echo "    none"
.venv/bin/mutmut export-cicd-stats > /dev/null
.venv/bin/python - <<'EOF'
import json

s = json.load(open("mutants/mutmut-cicd-stats.json"))
tested = s["killed"] + s["survived"] + s["timeout"] + s["suspicious"]
print(f"killed {s['killed']} + timeout {s['timeout']} of {tested} tested ({100 * (s['killed'] + s['timeout']) / max(tested, 1):.1f} %); "
      f"survived {s['survived']}, no tests {s['no_tests']}, skipped {s['skipped']}")
EOF
echo "log: $work/main/mutmut-run.log; a mutant: (cd $work/main && .venv/bin/mutmut show NAME)"
exit "$status"
