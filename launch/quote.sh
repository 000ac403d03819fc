# Sourced by the launch scripts: quote ARG prints ARG as a POSIX shell reads it back, as is
# when it has no shell characters, else in single quotes (a quote inside as '\'').
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
