# fish completion for dyncreds. Install: copy to ~/.config/fish/completions/
function __dyncreds_roles
    set -l dir (set -q DYNCREDS_CONFIG_DIR; and echo $DYNCREDS_CONFIG_DIR; or echo ~/.config/dyncreds)/roles
    for f in $dir/*.toml
        basename $f .toml
    end
end
set -l cmds agent status creds revoke rotate renew exec serve login audit roles reload check aws-config role init configure rotate-root unlock lock fleet install-units completion ui demo version
complete -c dyncreds -f -n "not __fish_seen_subcommand_from $cmds" -a "$cmds"
complete -c dyncreds -f -n "__fish_seen_subcommand_from creds exec renew rotate serve login aws-config" -a "(__dyncreds_roles)"
complete -c dyncreds -f -n "__fish_seen_subcommand_from revoke" -l role -a "(__dyncreds_roles)"
complete -c dyncreds -f -n "__fish_seen_subcommand_from revoke" -l all
complete -c dyncreds -f -n "__fish_seen_subcommand_from role" -a "create list show delete"
complete -c dyncreds -f -n "__fish_seen_subcommand_from creds" -l format -a "json env ini credential-process"
complete -c dyncreds -f -n "__fish_seen_subcommand_from status" -l watch
complete -c dyncreds-shim -f -a "(__dyncreds_roles)"
complete -c dyncreds -f -n "__fish_seen_subcommand_from fleet" -a "init status"
