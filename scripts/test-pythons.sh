#!/usr/bin/env bash
# The test suite on every other supported Python present here (setup.cfg says
# >= 3.10; scripts/test.sh covers the default python3). For each of python3.10,
# python3.12 and python3.13 that runs on this machine (directly, or as a pyenv
# version whose shim is not selected): a fresh virtual environment .venv-pyX.Y
# with the project and its test tools, then pytest. Prints each version's result
# and duration, and a summary; exits non-zero if any version failed.
# A version not present is reported as skipped, not as a failure.
# Set UDF_PYTHONS="3.10 3.13" to choose the versions. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."

find_python() {  # version -> path of a working interpreter, or nothing
    local v=$1 candidate
    if "python$v" -c 'import sys' >/dev/null 2>&1; then
        command -v "python$v"
        return
    fi
    if command -v pyenv >/dev/null 2>&1; then
        for candidate in "$(pyenv root)"/versions/"$v".*/bin/"python$v"; do
            if [ -x "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
                echo "$candidate"
                return
            fi
        done
    fi
}

summary=()
failed=0
for v in ${UDF_PYTHONS:-3.10 3.12 3.13}; do
    python=$(find_python "$v")
    if [ -z "$python" ]; then
        echo "== Python $v: not present, skipped"
        summary+=("Python $v: skipped (not present)")
        continue
    fi
    echo "== Python $v ($python)"
    start=$SECONDS
    venv=".venv-py$v"
    if "$python" -m venv "$venv" \
        && "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' \
        && "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"; then
        result=passed
    else
        result=FAILED
        failed=1
    fi
    summary+=("Python $v: $result in $((SECONDS - start)) s")
done
echo "== Python versions"
printf '%s\n' "${summary[@]}"
exit $failed
