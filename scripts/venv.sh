# Sourced by serve.sh and test.sh: make .venv and install the project with the pinned versions of
# constraints.txt (again only when setup.cfg, pyproject.toml or constraints.txt changed).
# Usage: ensure_venv EXTRA   (EXTRA is "base" or an extra of setup.cfg, e.g. "test")
# The tests run with the optional `spark` extra too, so its tests run rather than skip.
ensure_venv() {
  local extra=$1 py
  [ "$extra" = test ] && extra="test,spark"
  py=$(command -v python3.11 || command -v python3)
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  local want stamp=".venv/.installed-$extra"
  # top-level packages count too: an editable install only knows the packages it was made with
  want=$( (cat setup.cfg pyproject.toml constraints.txt; ls ./*/__init__.py 2>/dev/null) | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ "$extra" = base ]; then .venv/bin/python -m pip install --quiet -c constraints.txt -e .
    else .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[$extra]"; fi
    echo "$want" > "$stamp"
  fi
}
