#!/usr/bin/env bash
# Lay out the controller on a board (or an image being built): the versioned program in A/B slots, the
# config in /etc/ems, data and history in /var/lib/ems, a dedicated unprivileged user, the systemd units.
#
#   firmware/install.sh --wheels DIR [--root ROOT] [--key OEM.pub] [--site SITE.toml] [--no-user] [--no-systemd]
#
# DIR holds the program's wheel and every dependency built for the board (pip wheel / pip download
# --platform; docs/board.md). ROOT (default /) lets an image build or a test install into a folder.
# Idempotent: a second run keeps the config, the data and the installed slots.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=/ wheels= key= site= user=yes systemd=yes python=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$2; shift 2 ;;
        --wheels) wheels=$2; shift 2 ;;
        --key) key=$2; shift 2 ;;
        --site) site=$2; shift 2 ;;
        --no-user) user=no; shift ;;
        --no-systemd) systemd=no; shift ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$wheels" ] && [ -d "$wheels" ] || { echo "install.sh: --wheels DIR is required" >&2; exit 2; }
ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "install.sh: no wheels in $wheels" >&2; exit 2; }

opt="$root/opt/ems" etc="$root/etc/ems" data="$root/var/lib/ems"
install -d -m 0755 "$opt/slots" "$opt/bin" "$etc" "$etc/update-keys"
install -d -m 0750 "$data" "$data/update"

if [ ! -e "$opt/current" ]; then
    # first install: the wheels into slot a, offline (the board needs no index)
    rm -rf "$opt/slots/a.new"
    "$python" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
        --target "$opt/slots/a.new/site-packages" "$wheels"/*.whl
    version=$(PYTHONPATH="$opt/slots/a.new/site-packages" "$python" -c 'import ems; print(ems.__version__)')
    echo "$version" > "$opt/slots/a.new/VERSION"
    echo "{\"version\": \"$version\"}" > "$opt/slots/a.new/manifest.json"
    mv "$opt/slots/a.new" "$opt/slots/a"
    ln -sfn slots/a "$opt/current"
fi
# the boot guard lives outside the slots (stdlib only)
install -m 0755 "$opt/current/site-packages/ems/board/slots.py" "$opt/bin/ems-slot-guard"

# config: the cabinet's factory file and the site file (never overwritten)
factory=${site:-}
if [ -z "$factory" ]; then
    factory=$(mktemp)
    PYTHONPATH="$opt/current/site-packages" "$python" -m ems config template > "$factory"
fi
install -m 0644 "$factory" "$etc/factory-site.toml"
[ -e "$etc/site.toml" ] || install -m 0644 "$factory" "$etc/site.toml"
[ -z "$key" ] || install -m 0644 "$key" "$etc/update-keys/$(basename "$key")"

if [ "$user" = yes ]; then
    getent group gpio >/dev/null || groupadd --system gpio
    id ems >/dev/null 2>&1 || useradd --system --home-dir /var/lib/ems --shell /usr/sbin/nologin \
        --groups dialout,gpio ems
    chown -R ems:ems "$data"
    chown ems:ems "$etc/site.toml"
fi
if [ "$systemd" = yes ]; then
    install -m 0644 "$here/systemd/ems.service" "$here/systemd/ems-update.service" \
        "$here/systemd/ems-update.timer" "$root/etc/systemd/system/"
    if [ "$root" = / ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload
        systemctl enable --now ems.service ems-update.timer
    fi
fi
echo "installed ems $(cat "$opt/current/VERSION") in $opt/current; config $etc/site.toml; data $data"
