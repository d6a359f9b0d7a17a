#!/usr/bin/env bash
# Run a throwaway Synapse homeserver for the end-to-end tests.
#
# There is no Docker and no PyPI here, only Debian's package mirror, so
# Synapse comes from Debian sid (the suite that carries a current release)
# installed into a debootstrap chroot that is built once and cached.
#
# Usage: synapse.sh provision
#        synapse.sh start [--port N] [--fresh|--keep]
#        synapse.sh stop  [--port N | --all]
#        synapse.sh status
#        synapse.sh clean
# Run "synapse.sh help" for details.
set -euo pipefail

# debootstrap, chroot and mount live in sbin, which a minimal PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# Neither the host's nor the chroot's apt may stop to ask a question.
export DEBIAN_FRONTEND=noninteractive
# Keep the chroot's tools from complaining about the host's locale.
export LC_ALL=C.UTF-8

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG_PATCHER="$SCRIPT_DIR/lib-synapse-config.py"

CACHE=${SYNCV3_E2E_CACHE:-${HOME:-/root}/.cache/syncv3-e2e}
CHROOT="$CACHE/chroot"
# The stamp lives outside the chroot: a chroot without it is a leftover of
# an interrupted build and is rebuilt, never trusted.
STAMP="$CACHE/provisioned"
LOCKFILE="$CACHE/lock"
RUN_DIR="$CACHE/run"
PROVISION_LOG="$CACHE/provision.log"

SUITE=sid
DEFAULT_PORT=18008
# A fixed, well-known value on purpose: tests use it with the shared-secret
# registration admin API. This homeserver only ever listens on loopback.
REG_SECRET=${SYNAPSE_REGISTRATION_SHARED_SECRET:-syncv3-e2e-registration-secret}
START_TIMEOUT=${SYNAPSE_START_TIMEOUT:-60}

usage() {
	cat <<EOF
usage: $(basename "$0") COMMAND [OPTIONS]

Commands:
  provision            Build the cached Debian $SUITE chroot with Synapse
                       (once; later calls return at once).
  start [--port N] [--fresh|--keep]
                       Provision if needed, then start Synapse on
                       127.0.0.1:N (default \$SYNAPSE_PORT or $DEFAULT_PORT) and
                       print its base URL, e.g. http://127.0.0.1:$DEFAULT_PORT.
                       --fresh (default) wipes that port's data dir first;
                       --keep reuses it (users and rooms survive).
  stop [--port N | --all]
                       Stop that Synapse (or all of them); once none runs,
                       unmount /proc and /dev from the chroot.
  status               Show whether provisioned and which ports run.
  clean                Stop everything and delete the cache.

Environment:
  SYNCV3_E2E_CACHE     cache dir (default \$HOME/.cache/syncv3-e2e)
  SYNAPSE_PORT         default port for start/stop
  SYNAPSE_START_TIMEOUT  seconds to wait for Synapse to answer (default 60)
  SYNAPSE_REGISTRATION_SHARED_SECRET  (default syncv3-e2e-registration-secret)

Files for port N (data dir D = \$SYNCV3_E2E_CACHE/chroot/srv/synapse-N):
  D/homeserver.yaml, D/synapse.log, D/registration_shared_secret
EOF
}

log() { printf 'synapse.sh: %s\n' "$*" >&2; }
die() {
	printf 'synapse.sh: %s\n' "$*" >&2
	exit 1
}

require_root() {
	if [[ $(id -u) -ne 0 ]]; then
		printf 'synapse.sh: must run as root (needs debootstrap, chroot and mount)\n' >&2
		exit 2
	fi
}

# One lock for everything that changes the chroot or its mounts, so two
# provisions cannot race and a stop cannot unmount under a starting server.
take_lock() {
	mkdir -p "$CACHE"
	exec 9>"$LOCKFILE"
	flock -w 600 9 || die "timed out waiting for lock $LOCKFILE"
}
release_lock() {
	exec 9>&-
}

# All mount points at or below $1, deepest first. /proc/self/mounts escapes
# blanks as octal (\040); printf %b turns them back.
mounts_under() {
	local dir m
	dir=$(realpath -m "$1")
	awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts |
		sort -r |
		while IFS= read -r m; do printf '%b\n' "$m"; done
}

# Unmounting everything below a tree before deleting it is what keeps
# "rm -rf" from recursing into /proc or, worse, into the host's /dev.
unmount_under() {
	local m
	while IFS= read -r m; do
		[[ -n $m ]] || continue
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null ||
			log "warning: could not unmount $m"
	done < <(mounts_under "$1")
}

# Pids of processes whose root directory is $1 or below it, i.e. things
# running inside that chroot. Only ever our own apt/dpkg/Synapse.
procs_rooted_in() {
	local dir p root
	dir=$(realpath -m "$1")
	for p in /proc/[0-9]*; do
		root=$(readlink "$p/root" 2>/dev/null) || continue
		if [[ $root == "$dir" || $root == "$dir"/* ]]; then
			printf '%s\n' "${p#/proc/}"
		fi
	done
}

# An interrupted provision leaves apt/dpkg running on inside the chroot
# (the signal reaches only this script); they must go before the tree does.
kill_procs_rooted_in() {
	local pids i
	pids=$(procs_rooted_in "$1")
	[[ -n $pids ]] || return 0
	# shellcheck disable=SC2086 # one pid per word is intended
	kill -TERM $pids 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		[[ -n $(procs_rooted_in "$1") ]] || return 0
		sleep 0.1
	done
	pids=$(procs_rooted_in "$1")
	# shellcheck disable=SC2086
	[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
}

# Delete a tree only once nothing runs or is mounted inside it.
safe_rm_tree() {
	local dir=$1
	[[ -e $dir ]] || return 0
	kill_procs_rooted_in "$dir"
	unmount_under "$dir"
	if [[ -n $(mounts_under "$dir") ]]; then
		die "refusing to delete $dir: still has mounts: $(mounts_under "$dir" | tr '\n' ' ')"
	fi
	rm -rf -- "$dir"
}

# /proc for Python and apt. For /dev a small tmpfs with just the character
# devices bound in, never a bind of the whole host /dev: with that, an
# "rm -rf" of the cache while mounted would delete the host's device nodes.
# A bound single node, by contrast, only ever fails with EBUSY.
mount_chroot() {
	local root=$1 node
	if ! mountpoint -q "$root/proc"; then
		mount -t proc proc "$root/proc"
	fi
	if ! mountpoint -q "$root/dev"; then
		mount -t tmpfs -o mode=0755,nosuid,size=1m syncv3-dev "$root/dev"
		for node in null zero full random urandom tty; do
			: >"$root/dev/$node"
			mount --bind "/dev/$node" "$root/dev/$node"
		done
		mkdir -m 1777 "$root/dev/shm"
		ln -s /proc/self/fd "$root/dev/fd"
		ln -s /proc/self/fd/0 "$root/dev/stdin"
		ln -s /proc/self/fd/1 "$root/dev/stdout"
		ln -s /proc/self/fd/2 "$root/dev/stderr"
	fi
}

# The main Debian archive apt on this host already uses. It is the only
# Debian mirror known to be reachable, so debootstrap must use it too.
host_debian_mirror() {
	local f uri=""
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] || continue
		# One-line "deb [opts] URI suite ..." and deb822 "URIs: a b" forms;
		# keep only the main archive (path ending in /debian), not security,
		# backports-only or third-party repositories.
		uri=$(awk '
			/^[[:space:]]*#/ { next }
			$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }
			$1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
		' "$f" | grep -E '^https?://.*/debian/?$' | head -n 1 || true)
		if [[ -n $uri ]]; then break; fi
	done
	printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

# Print the last meaningful line of a log, for one-line error messages.
last_line() {
	grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 || true
}

ensure_host_tools() {
	if command -v debootstrap >/dev/null && [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
		return 0
	fi
	log "installing debootstrap on the host"
	if ! { apt-get update -qq && apt-get install -y -qq debootstrap debian-archive-keyring; } >>"$PROVISION_LOG" 2>&1; then
		die "provision failed: could not apt-get install debootstrap on the host: $(last_line "$PROVISION_LOG") (log: $PROVISION_LOG)"
	fi
}

# Runs with the lock held. Builds into a side directory and renames it into
# place only when complete, so an interrupted build never looks finished.
build_chroot() {
	local build="$CACHE/chroot.partial" mirror version
	: >"$PROVISION_LOG"
	ensure_host_tools
	mirror=$(host_debian_mirror)

	# Leftovers from an interrupted attempt (no stamp means not trusted).
	safe_rm_tree "$build"
	safe_rm_tree "$CHROOT"

	# If anything below fails or we are interrupted, stop what runs in the
	# half-built tree and do not leave /proc or /dev mounted in it.
	# shellcheck disable=SC2064 # expand $build now, on purpose
	trap "kill_procs_rooted_in '$build'; unmount_under '$build'" EXIT

	log "debootstrap $SUITE from $mirror (log: $PROVISION_LOG)"
	if ! debootstrap --variant=minbase "$SUITE" "$build" "$mirror" >>"$PROVISION_LOG" 2>&1; then
		die "provision failed: debootstrap $SUITE from $mirror: $(last_line "$PROVISION_LOG") (log: $PROVISION_LOG)"
	fi

	# A chroot has no init: stop the package's maintainer scripts from trying
	# to start a system-wide Synapse service while installing.
	printf '#!/bin/sh\nexit 101\n' >"$build/usr/sbin/policy-rc.d"
	chmod 755 "$build/usr/sbin/policy-rc.d"
	# Name resolution inside the chroot works as on the host.
	if [[ -e /etc/resolv.conf ]]; then cp -L /etc/resolv.conf "$build/etc/resolv.conf"; fi
	mount_chroot "$build"

	log "installing matrix-synapse in the chroot"
	# Check-Valid-Until=false: the mirror may serve a snapshot whose Release
	# file has already "expired"; the host's apt is configured the same way.
	if ! chroot "$build" apt-get -o Acquire::Check-Valid-Until=false update >>"$PROVISION_LOG" 2>&1; then
		die "provision failed: apt-get update in the chroot: $(last_line "$PROVISION_LOG") (log: $PROVISION_LOG)"
	fi
	if ! chroot "$build" apt-get -o Acquire::Check-Valid-Until=false install -y --no-install-recommends \
		matrix-synapse >>"$PROVISION_LOG" 2>&1; then
		die "provision failed: apt-get install matrix-synapse in the chroot: $(last_line "$PROVISION_LOG") (log: $PROVISION_LOG)"
	fi
	# Downloaded .debs are dead weight in the cache.
	chroot "$build" apt-get clean >>"$PROVISION_LOG" 2>&1 || true

	if ! version=$(chroot "$build" python3 -c 'import synapse; print(synapse.__version__)' 2>>"$PROVISION_LOG"); then
		die "provision failed: synapse does not import in the chroot: $(last_line "$PROVISION_LOG") (log: $PROVISION_LOG)"
	fi

	unmount_under "$build"
	trap - EXIT
	mv "$build" "$CHROOT"
	printf '%s\n' "$version" >"$CACHE/synapse-version"
	# Written last: its presence means the chroot above is complete.
	date -u +%Y-%m-%dT%H:%M:%SZ >"$STAMP"
	log "provisioned Synapse $version in $CHROOT"
}

cmd_provision() {
	# Fast path without the lock, so a provisioned machine answers at once.
	[[ -f $STAMP && -d $CHROOT ]] && return 0
	take_lock
	# Someone else may have finished while we waited for the lock.
	if [[ ! -f $STAMP || ! -d $CHROOT ]]; then
		rm -f -- "$STAMP"
		build_chroot
	fi
	release_lock
}

pidfile_for() { printf '%s/synapse-%s.pid\n' "$RUN_DIR" "$1"; }

# Prints the pid of this script's Synapse on port $1 if it is alive. The
# command line is checked so a recycled pid is never mistaken for ours.
running_pid() {
	local pidfile pid
	pidfile=$(pidfile_for "$1")
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "synapse.app.homeserver -c /srv/synapse-$1/" || return 1
	printf '%s\n' "$pid"
}

# Ports that have a pidfile, alive or not.
known_ports() {
	local f
	for f in "$RUN_DIR"/synapse-*.pid; do
		[[ -f $f ]] || continue
		f=${f##*/synapse-}
		printf '%s\n' "${f%.pid}"
	done
}

any_running() {
	local p
	while IFS= read -r p; do
		running_pid "$p" >/dev/null && return 0
	done < <(known_ports)
	return 1
}

port_in_use() {
	# bash's /dev/tcp: no dependency on ss/netstat/curl on a bare machine.
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# GET a URL on loopback with the chroot's python (the host may lack curl).
http_get() {
	chroot "$CHROOT" python3 -c '
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.stdout.write(r.read().decode())
' "$1" 2>/dev/null
}

# Stops one port's Synapse; caller holds the lock.
stop_port() {
	local port=$1 pid i
	if pid=$(running_pid "$port"); then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			[[ -d /proc/$pid ]] || break
			sleep 0.1
		done
		if [[ -d /proc/$pid ]]; then
			log "port $port: Synapse ignored SIGTERM for 10 s, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				[[ -d /proc/$pid ]] || break
				sleep 0.1
			done
		fi
	fi
	rm -f -- "$(pidfile_for "$port")"
}

unmount_if_idle() {
	if ! any_running && [[ -d $CHROOT ]]; then
		unmount_under "$CHROOT"
	fi
}

parse_port() {
	if ! [[ $1 =~ ^[0-9]{1,5}$ ]] || ((10#$1 < 1 || 10#$1 > 65535)); then
		die "invalid port: $1"
	fi
	printf '%d\n' "$((10#$1))"
}

cmd_start() {
	local port=${SYNAPSE_PORT:-$DEFAULT_PORT} fresh=1
	while (($#)); do
		case $1 in
		--port)
			[[ $# -ge 2 ]] || die "--port needs a value"
			port=$2
			shift 2
			;;
		--port=*)
			port=${1#--port=}
			shift
			;;
		--fresh) fresh=1 && shift ;;
		--keep) fresh=0 && shift ;;
		*) die "start: unknown option $1" ;;
		esac
	done
	port=$(parse_port "$port")

	cmd_provision
	take_lock

	# Restarting our own server is fine (and is what a fresh start means);
	# anything else on the port is not ours to kill.
	if running_pid "$port" >/dev/null; then
		log "port $port: restarting the Synapse already running there"
		stop_port "$port"
	fi
	rm -f -- "$(pidfile_for "$port")"
	if port_in_use "$port"; then
		die "port $port is already in use by another program; pick one with --port"
	fi

	local inner="/srv/synapse-$port"
	local data="$CHROOT$inner"
	local config="$inner/homeserver.yaml"
	if ((fresh)); then
		safe_rm_tree "$data"
	fi
	mkdir -p "$data" "$RUN_DIR"
	mount_chroot "$CHROOT"

	# Generation makes the signing key and macaroon/form secrets: done once
	# per data dir so --keep keeps existing access tokens valid.
	if [[ ! -f $data/homeserver.yaml ]]; then
		if ! chroot "$CHROOT" python3 -m synapse.app.homeserver \
			--server-name localhost \
			--config-path "$config" \
			--data-directory "$inner" \
			--generate-config --report-stats=no >"$data/generate.log" 2>&1; then
			unmount_if_idle
			die "generating the config failed: $(last_line "$data/generate.log") (log: $data/generate.log)"
		fi
	fi
	# Re-applied on every start so a changed port or script takes effect.
	if ! chroot "$CHROOT" python3 - "$config" "$port" "$REG_SECRET" <"$CONFIG_PATCHER" >"$data/patch.log" 2>&1; then
		unmount_if_idle
		die "patching the config failed: $(last_line "$data/patch.log")"
	fi
	printf '%s\n' "$REG_SECRET" >"$data/registration_shared_secret"

	# setsid: Synapse outlives this script and the caller's terminal.
	# Redirecting every stream (and closing the lock fd) matters: a test
	# runner reading our stdout would otherwise wait for Synapse to exit, and
	# Synapse would hold the lock forever.
	: >"$data/synapse.log"
	setsid chroot "$CHROOT" python3 -m synapse.app.homeserver -c "$config" \
		</dev/null >>"$data/synapse.log" 2>&1 9>&- &
	local pid=$!
	printf '%s\n' "$pid" >"$(pidfile_for "$port")"
	release_lock

	local url="http://127.0.0.1:$port" deadline=$((SECONDS + START_TIMEOUT))
	until http_get "$url/_matrix/client/versions" >/dev/null; do
		if [[ ! -d /proc/$pid ]] || ((SECONDS >= deadline)); then
			local why="did not answer within ${START_TIMEOUT}s"
			[[ -d /proc/$pid ]] || why="exited during start-up"
			take_lock
			stop_port "$port"
			unmount_if_idle
			release_lock
			{
				printf 'synapse.sh: Synapse on port %s %s; last lines of %s:\n' "$port" "$why" "$data/synapse.log"
				tail -n 30 "$data/synapse.log"
			} >&2
			exit 1
		fi
		sleep 0.2
	done
	printf '%s\n' "$url"
}

cmd_stop() {
	local port=${SYNAPSE_PORT:-$DEFAULT_PORT} all=0 p
	while (($#)); do
		case $1 in
		--port)
			[[ $# -ge 2 ]] || die "--port needs a value"
			port=$2
			shift 2
			;;
		--port=*)
			port=${1#--port=}
			shift
			;;
		--all) all=1 && shift ;;
		*) die "stop: unknown option $1" ;;
		esac
	done
	[[ -d $CACHE ]] || return 0
	take_lock
	if ((all)); then
		while IFS= read -r p; do stop_port "$p"; done < <(known_ports)
	else
		stop_port "$(parse_port "$port")"
	fi
	unmount_if_idle
	release_lock
}

cmd_status() {
	local p pid any=0
	if [[ -f $STAMP && -d $CHROOT ]]; then
		printf 'provisioned: yes (Synapse %s, %s)\n' "$(cat "$CACHE/synapse-version" 2>/dev/null || echo '?')" "$CHROOT"
	else
		printf 'provisioned: no\n'
	fi
	while IFS= read -r p; do
		if pid=$(running_pid "$p"); then
			printf 'port %s: running (pid %s) http://127.0.0.1:%s\n' "$p" "$pid" "$p"
			any=1
		else
			printf 'port %s: not running (stale pidfile)\n' "$p"
		fi
	done < <(known_ports)
	((any)) || printf 'running: none\n'
	if [[ -d $CHROOT ]] && [[ -n $(mounts_under "$CHROOT") ]]; then
		printf 'mounts: %s\n' "$(mounts_under "$CHROOT" | tr '\n' ' ')"
	fi
}

cmd_clean() {
	[[ -d $CACHE ]] || return 0
	cmd_stop --all
	take_lock
	safe_rm_tree "$CHROOT"
	safe_rm_tree "$CACHE/chroot.partial"
	rm -rf -- "$RUN_DIR" "$STAMP" "$CACHE/synapse-version" "$PROVISION_LOG"
	release_lock
	rm -f -- "$LOCKFILE"
	rmdir -- "$CACHE" 2>/dev/null || true
}

main() {
	local cmd=${1:-help}
	if [[ $# -gt 0 ]]; then shift; fi
	case $cmd in
	help | -h | --help)
		usage
		return 0
		;;
	provision | start | stop | status | clean) ;;
	*)
		usage >&2
		exit 2
		;;
	esac
	require_root
	case $cmd in
	provision)
		[[ $# -eq 0 ]] || die "provision takes no options"
		cmd_provision
		;;
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status ;;
	clean) cmd_clean ;;
	esac
}

main "$@"
