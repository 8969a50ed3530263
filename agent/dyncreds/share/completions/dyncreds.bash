# bash completion for dyncreds. Install: source it from ~/.bashrc, or copy to
# ~/.local/share/bash-completion/completions/dyncreds
_dyncreds_roles() {
    local dir="${DYNCREDS_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/dyncreds}/roles"
    [ -d "$dir" ] && (cd "$dir" && ls -- *.toml 2>/dev/null | sed 's/\.toml$//')
}
_dyncreds() {
    local cur prev words cword
    _init_completion 2>/dev/null || { cur="${COMP_WORDS[COMP_CWORD]}"; prev="${COMP_WORDS[COMP_CWORD-1]}"; }
    local commands="agent status creds revoke rotate renew exec serve login audit roles reload check aws-config role init configure rotate-root unlock lock fleet install-units completion ui demo version"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur")); return
    fi
    case "${COMP_WORDS[1]}" in
        creds|exec|renew|rotate|serve|login|aws-config) COMPREPLY=($(compgen -W "$(_dyncreds_roles) --format --json" -- "$cur")) ;;
        revoke) COMPREPLY=($(compgen -W "--role --all --force $(_dyncreds_roles)" -- "$cur")) ;;
        role) if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "create list show delete" -- "$cur"));
              else COMPREPLY=($(compgen -W "$(_dyncreds_roles) --type --policy-file --policy-arn --iam-group --role-arn --ttl --max-ttl --region" -- "$cur")); fi ;;
        configure) COMPREPLY=($(compgen -W "root --profile --access-key-id --secret-stdin --region --iam-endpoint --sts-endpoint --store --keyring-item --mfa-serial --unlock-for --rotate-every --no-check" -- "$cur")) ;;
        fleet) COMPREPLY=($(compgen -W "init status --json" -- "$cur")) ;;
        unlock) COMPREPLY=($(compgen -W "--code" -- "$cur")) ;;
        audit) COMPREPLY=($(compgen -W "--role --since --json" -- "$cur")) ;;
        status) COMPREPLY=($(compgen -W "--json --watch --interval" -- "$cur")) ;;
    esac
    [ "$prev" = "--format" ] && COMPREPLY=($(compgen -W "json env ini credential-process" -- "$cur"))
    [ "$prev" = "--type" ] && COMPREPLY=($(compgen -W "iam_user assumed_role federation_token session_token static_user" -- "$cur"))
}
complete -F _dyncreds dyncreds
complete -W "$(_dyncreds_roles)" dyncreds-shim
