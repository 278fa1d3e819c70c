# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ferry_agent_global_optspecs
    string join \n config= h/help V/version
end

function __fish_ferry_agent_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ferry_agent_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ferry_agent_using_subcommand
    set -l cmd (__fish_ferry_agent_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -s V -l version -d 'Print version'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "run" -d 'Run as the service: poll the mirrors, download with resume, apply, report. Under systemd (Type=notify) it signals readiness and pings the watchdog; SIGHUP reloads the config, SIGTERM stops after the current step'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "import" -d 'Import and apply the newest release from a .ferry file, a directory of them, or a mirror layout (e.g. a USB stick written by `bundler export`)'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "pause" -d 'Stop applying releases on this device (until TIME, or until `resume`). A paused device still downloads, verifies and reports, and says it is paused in `status` and reports'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "resume" -d 'Lift a pause: the next poll (or import) applies what is pending'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "status" -d 'Show the applied release, slot, trial state and last error'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "history" -d 'Show past apply attempts and events'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "rollback" -d 'Switch back to the release in the other slot, through the same protocol (hooks, health check); the release rolled away from is not re-applied'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "identity" -d 'Show this device\'s identity: its id, and the key that signs its reports (made on first use), for the operator to enrol'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "export-reports" -d 'Write pending reports to DIR (e.g. a USB stick) as signed batch files, after applying the acknowledgement `bundler reports import` left there. Reports stay on the device until acknowledged'
complete -c ferry-agent -n "__fish_ferry_agent_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand run" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand run" -l once -d 'One poll cycle, then exit: 0 when converged, 1 with the reason when not'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand run" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand import" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand import" -l now -d 'Apply now even outside the maintenance windows (an operator at the device). A pause still holds: `ferry-agent resume` first'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand pause" -l until -d 'When the pause ends by itself: a duration (3h, 2days), a local date and time (2026-12-01 06:00) or RFC 3339 (2026-12-01T05:00:00Z). Default: until `resume`' -r
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand pause" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand pause" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand resume" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand resume" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand status" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand status" -l json -d 'Machine-readable output'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand status" -l verify -d 'Also compare the active slot with its release tree (drift); exits 1 on drift'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand status" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand history" -s n -l limit -d 'How many entries' -r
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand history" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand history" -l json -d 'Machine-readable output'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand history" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand rollback" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand rollback" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand identity" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand identity" -l json -d 'Machine-readable output'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand identity" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand export-reports" -l config -d 'Agent configuration file' -r -F
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand export-reports" -s h -l help -d 'Print help'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "run" -d 'Run as the service: poll the mirrors, download with resume, apply, report. Under systemd (Type=notify) it signals readiness and pings the watchdog; SIGHUP reloads the config, SIGTERM stops after the current step'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "import" -d 'Import and apply the newest release from a .ferry file, a directory of them, or a mirror layout (e.g. a USB stick written by `bundler export`)'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "pause" -d 'Stop applying releases on this device (until TIME, or until `resume`). A paused device still downloads, verifies and reports, and says it is paused in `status` and reports'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "resume" -d 'Lift a pause: the next poll (or import) applies what is pending'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "status" -d 'Show the applied release, slot, trial state and last error'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "history" -d 'Show past apply attempts and events'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "rollback" -d 'Switch back to the release in the other slot, through the same protocol (hooks, health check); the release rolled away from is not re-applied'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "identity" -d 'Show this device\'s identity: its id, and the key that signs its reports (made on first use), for the operator to enrol'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "export-reports" -d 'Write pending reports to DIR (e.g. a USB stick) as signed batch files, after applying the acknowledgement `bundler reports import` left there. Reports stay on the device until acknowledged'
complete -c ferry-agent -n "__fish_ferry_agent_using_subcommand help; and not __fish_seen_subcommand_from run import pause resume status history rollback identity export-reports help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
