#!/bin/sh
# Shared by every container of the stack (POSIX sh: the official images have no
# common shell beyond it). Source it, then call `require_secret PATH NAME`: the
# container refuses to start when a secret file is missing, unreadable, empty
# or still a placeholder. Messages name the file, never its content.
# Placeholders: keep in step with rpger_ops/settings.py PLACEHOLDER_SECRETS.

require_secret() {
    _path=$1
    _name=${2:-$1}
    if [ ! -e "$_path" ]; then
        echo "rpger: refusing to start: secret $_name missing ($_path); run compose/setup-secrets.sh" >&2
        exit 78
    fi
    if [ ! -r "$_path" ]; then
        echo "rpger: refusing to start: secret $_name not readable ($_path)" >&2
        exit 78
    fi
    _val=$(tr -d '\r\n' <"$_path" | tr '[:upper:]' '[:lower:]' | sed 's/^[[:space:]]*//;s/[[:space:]]*$//')
    case "$_val" in
        "" | changeme | change-me | password | secret | placeholder | xxx)
            echo "rpger: refusing to start: secret $_name ($_path) is empty or a placeholder" >&2
            exit 78
            ;;
    esac
    unset _val
    if [ "$(wc -c <"$_path")" -lt 16 ]; then
        echo "rpger: refusing to start: secret $_name ($_path) is shorter than 16 characters" >&2
        exit 78
    fi
}
