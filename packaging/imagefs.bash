# bash completion for imagefs: commands, their options and the image references in the store.
# The commands and options come from the program itself (`imagefs help --complete`, made from
# the tables `imagefs help` prints), so this file never lists them; references from
# `imagefs images` (with the --cache-dir and --config of the command line being completed).
# Installed as /usr/share/bash-completion/completions/imagefs.

_imagefs() {
  local prog=${COMP_WORDS[0]:-imagefs}
  local cur=${COMP_WORDS[COMP_CWORD]} prev=""
  ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
  # bash splits words at ':' (COMP_WORDBREAKS), which references hold: complete the whole word
  # as the line has it, and give back only the part after its last ':'.
  if [[ -n ${COMP_LINE:-} ]]; then
    local before=${COMP_LINE:0:${COMP_POINT:-${#COMP_LINE}}}
    [[ $before =~ ([^[:space:]]*)$ ]] && cur=${BASH_REMATCH[1]}
    if [[ $prev == : || $prev == *: ]] && ((COMP_CWORD > 1)); then
      prev=${COMP_WORDS[COMP_CWORD - 2]}
      [[ $prev == : ]] && ((COMP_CWORD > 2)) && prev=${COMP_WORDS[COMP_CWORD - 3]}
    fi
  fi
  COMPREPLY=()

  local table
  table=$(IMAGEFS_CONFIG='' "$prog" help --complete 2>/dev/null) || return 0

  # The command: the first word after the program that is no option.
  local cmd="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    if [[ ${COMP_WORDS[i]} != -* ]]; then
      cmd=${COMP_WORDS[i]}
      break
    fi
  done
  if [[ -z $cmd ]]; then
    local commands
    commands=$(while read -r name _; do echo "$name"; done <<<"$table")
    mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
    return 0
  fi
  local line
  line=$(grep -m1 "^$cmd " <<<"$table" || grep -m1 "^$cmd\$" <<<"$table")
  local options=() tok
  read -r -a options <<<"${line#"$cmd"}"

  # The value of an option: files, directories, or nothing we can guess.
  if [[ $prev == --* ]]; then
    for tok in "${options[@]}"; do
      if [[ $tok == "$prev="* ]]; then
        case ${tok#*=} in
          FILE) mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
          DIR) mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
          OS/ARCH*) mapfile -t COMPREPLY < <(compgen -W "linux/amd64 linux/arm64 linux/arm/v7 linux/386 linux/ppc64le linux/s390x linux/riscv64" -- "$cur") ;;
        esac
        return 0
      fi
    done
  fi

  if [[ $cur == -* ]]; then
    local names=()
    for tok in "${options[@]}"; do names+=("${tok%%=*}"); done
    mapfile -t COMPREPLY < <(compgen -W "${names[*]} --help" -- "$cur")
    return 0
  fi

  case $cmd in
    pull | rm | build | export)
      # The references the store holds; the same store as the command being typed.
      local args=()
      for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
          --cache-dir | --config) args+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 1]}") ;;
          --cache-dir=* | --config=*) args+=("${COMP_WORDS[i]}") ;;
        esac
      done
      local refs
      refs=$("$prog" images "${args[@]}" 2>/dev/null |
        while read -r ref _; do
          [[ $ref == REFERENCE || $ref == the ]] || echo "$ref"
        done)
      mapfile -t COMPREPLY < <(compgen -W "$refs" -- "$cur")
      if [[ $cur == *:* ]]; then
        local strip=${cur%"${cur##*:}"}
        COMPREPLY=("${COMPREPLY[@]#"$strip"}")
      fi
      ;;
    mount | status) mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
    help)
      local topics
      topics="$(while read -r name _; do echo "$name"; done <<<"$table") config fstab"
      mapfile -t COMPREPLY < <(compgen -W "$topics" -- "$cur")
      ;;
  esac
  return 0
}
complete -F _imagefs imagefs
