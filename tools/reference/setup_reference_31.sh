#!/usr/bin/env bash
# Assembles Meta's official SAM 3.1 sources (the `sam3` package of the facebookresearch/sam3
# repository at ONE commit, recorded in sam31_sources.txt) into an overlay next to the SAM 3.0
# reference venv, without touching that venv:
#
#   $OVERLAY/src/sam3/      the official package at the pinned commit (every file checked against
#                           the sha256 in sam31_sources.txt)
#   $OVERLAY/deps/          setuptools<81 (the 3.1 model_builder imports pkg_resources, which the
#                           3.0 venv's setuptools 84 no longer ships)
#   $OVERLAY/bin/python     runs the 3.0 venv's python with src/ and deps/ first on PYTHONPATH,
#                           so `import sam3` gives 3.1 while torch & co. are the 3.0 venv's
#   $OVERLAY/COMMIT         the commit the sources come from
#
# Sources, in this order of preference:
#   --git DIR     a local clone (or bare git dir) of facebookresearch/sam3, or of a fork that holds
#                 the pinned commit: `git archive` of that commit (no network)
#   (default)     the GitHub archive of the pinned commit (one tarball download)
#   --raw         one download per file from raw.githubusercontent.com (slow; for proxies that
#                 block codeload.github.com)
# Maintainers: `--write-list --git DIR [COMMIT]` rewrites sam31_sources.txt from a clone.
#
# Usage: bash tools/reference/setup_reference_31.sh [--git DIR | --raw] [--overlay DIR]
# Env:   SAM3_REFERENCE_VENV (default ~/.cache/sam3-reference-venv, built by
#        ../shared/reference/setup_reference_env.sh), SAM31_OVERLAY (default
#        ~/.cache/sam3-reference-31).
# Nothing of the official code is written inside this repository.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIST="$HERE/sam31_sources.txt"
VENV="${SAM3_REFERENCE_VENV:-$HOME/.cache/sam3-reference-venv}"
OVERLAY="${SAM31_OVERLAY:-$HOME/.cache/sam3-reference-31}"
REPO_URL="https://github.com/facebookresearch/sam3"
MODE=archive
GIT_DIR_SRC=""
WRITE_LIST=0
WRITE_COMMIT=""

while [ $# -gt 0 ]; do
  case "$1" in
    --git) MODE=git; GIT_DIR_SRC="$2"; shift 2 ;;
    --raw) MODE=raw; shift ;;
    --overlay) OVERLAY="$2"; shift 2 ;;
    --write-list) WRITE_LIST=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) if [ "$WRITE_LIST" = 1 ] && [ -z "$WRITE_COMMIT" ]; then WRITE_COMMIT="$1"; shift;
       else echo "unknown argument: $1" >&2; exit 2; fi ;;
  esac
done

git_in() {  # git against a work tree or a bare directory
  if [ -d "$GIT_DIR_SRC/.git" ]; then git -C "$GIT_DIR_SRC" "$@"; else git --git-dir="$GIT_DIR_SRC" "$@"; fi
}

# ------------------------------------------------------------------ maintainers: write the list
if [ "$WRITE_LIST" = 1 ]; then
  [ "$MODE" = git ] || { echo "--write-list needs --git DIR" >&2; exit 2; }
  COMMIT="$(git_in rev-parse "${WRITE_COMMIT:-HEAD}^{commit}")"
  TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
  git_in archive --prefix=sam3/ "$COMMIT:sam3" | tar -x -C "$TMP"
  {
    echo "# Official SAM 3.1 sources for the reference overlay (tools/reference/setup_reference_31.sh)."
    echo "# repository: $REPO_URL"
    echo "# commit: $COMMIT"
    echo "# subject: $(git_in log -1 --format='%s (%ad)' --date=short "$COMMIT")"
    echo "# Every file of the sam3/ package at that commit: path<TAB>commit<TAB>sha256<TAB>bytes"
    (cd "$TMP" && find sam3 -type f | LC_ALL=C sort | while read -r f; do
      printf '%s\t%s\t%s\t%s\n' "$f" "$COMMIT" "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")"
    done)
  } > "$LIST"
  echo "wrote $LIST ($(grep -vc '^#' "$LIST") files at $COMMIT)"
  exit 0
fi

# ------------------------------------------------------------------ the overlay
[ -f "$LIST" ] || { echo "missing $LIST" >&2; exit 1; }
COMMIT="$(sed -n 's/^# commit: //p' "$LIST")"
[ -n "$COMMIT" ] || { echo "no '# commit:' line in $LIST" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  echo "the SAM 3.0 reference venv is missing ($VENV): run ../shared/reference/setup_reference_env.sh first" >&2
  exit 1
fi

TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/src"
case "$MODE" in
  git)
    git_in cat-file -e "$COMMIT^{commit}" || { echo "$GIT_DIR_SRC lacks commit $COMMIT" >&2; exit 1; }
    git_in archive --prefix=sam3/ "$COMMIT:sam3" | tar -x -C "$TMP/src" ;;
  archive)
    curl -fsSL "$REPO_URL/archive/$COMMIT.tar.gz" -o "$TMP/sam3.tar.gz"
    tar -xzf "$TMP/sam3.tar.gz" -C "$TMP/src" --strip-components=1 "sam3-$COMMIT/sam3" ;;
  raw)
    grep -v '^#' "$LIST" | cut -f1 | while read -r f; do
      mkdir -p "$TMP/src/$(dirname "$f")"
      curl -fsSL "https://raw.githubusercontent.com/facebookresearch/sam3/$COMMIT/$f" -o "$TMP/src/$f"
    done ;;
esac

# Every listed file must be there with its recorded hash, and nothing else.
bad=0
while IFS=$'\t' read -r f c sha _bytes; do
  case "$f" in '#'*|'') continue ;; esac
  [ "$c" = "$COMMIT" ] || { echo "list mixes commits: $f at $c" >&2; bad=1; }
  if [ ! -f "$TMP/src/$f" ]; then echo "missing: $f" >&2; bad=1; continue; fi
  [ "$(sha256sum "$TMP/src/$f" | cut -d' ' -f1)" = "$sha" ] || { echo "sha256 differs: $f" >&2; bad=1; }
done < "$LIST"
extra="$(cd "$TMP/src" && find sam3 -type f | LC_ALL=C sort | comm -23 - <(grep -v '^#' "$LIST" | cut -f1 | LC_ALL=C sort))"
[ -z "$extra" ] || { echo "files not in the list: $extra" >&2; bad=1; }
[ "$bad" = 0 ] || { echo "sources do not match $LIST; overlay left unchanged" >&2; exit 1; }

mkdir -p "$OVERLAY/bin"
rm -rf "$OVERLAY/src"
mv "$TMP/src" "$OVERLAY/src"
echo "$COMMIT" > "$OVERLAY/COMMIT"

# pkg_resources (setuptools < 81) for the official model_builder; the 3.0 venv is not touched.
if ! PYTHONPATH="$OVERLAY/deps" "$VENV/bin/python" -c "import pkg_resources" 2>/dev/null; then
  "$VENV/bin/pip" --isolated install -q --no-deps --target "$OVERLAY/deps" "setuptools<81"
fi

cat > "$OVERLAY/bin/python" <<EOF
#!/usr/bin/env bash
# SAM 3.1 reference interpreter: the SAM 3.0 reference venv's python with the official 3.1
# sources ($COMMIT) first on the path.
export PYTHONPATH="$OVERLAY/src:$OVERLAY/deps\${PYTHONPATH:+:\$PYTHONPATH}"
export PYTHONWARNINGS="\${PYTHONWARNINGS:-ignore::UserWarning:pkg_resources}"
exec "$VENV/bin/python" "\$@"
EOF
chmod +x "$OVERLAY/bin/python"

"$OVERLAY/bin/python" - <<'EOF'
import sam3, sam3.model_builder as mb
assert hasattr(mb, "build_sam3_multiplex_video_predictor"), "not the 3.1 model_builder"
print("sam3 from", sam3.__file__)
EOF
echo "SAM 3.1 reference ready: $OVERLAY/bin/python (sources at $COMMIT)"
