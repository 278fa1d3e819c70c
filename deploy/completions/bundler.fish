# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_bundler_global_optspecs
    string join \n h/help V/version
end

function __fish_bundler_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_bundler_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_bundler_using_subcommand
    set -l cmd (__fish_bundler_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c bundler -n "__fish_bundler_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bundler -n "__fish_bundler_needs_command" -s V -l version -d 'Print version'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "keygen" -d 'Make an Ed25519 key pair: FILE (PKCS#8 PEM, mode 0600) and FILE.pub; prints the key id'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "trust" -d 'Create or rotate the trust root'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "release" -d 'Publish the tree of a git ref as the next release of a channel'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "index" -d 'Manage a channel index'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "rollout" -d 'Widen, narrow, halt or resume the staged rollout of a channel\'s latest release (re-signs the index only); widening is refused over the fleet\'s failure ratio'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "verify" -d 'Verify a .ferry file or a whole mirror as a device would; prints OK or the typed reason'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "inspect" -d 'Print any Ferry document (root, manifest, index, .ferry) as JSON, without verifying'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "export" -d 'Copy what a USB stick needs for one channel (trust history, index, latest release)'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "demo" -d 'Run Ferry end to end in ./ferry-demo: repo, keys, mirror, and a real ferry-agent applying a full release, a delta, and a failing release that is rolled back'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "serve" -d 'Serve a mirror over HTTP and accept devices\' signed report batches (POST /v1/reports)'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "devices" -d 'Enroll devices (their public keys) and list them'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "reports" -d 'Take devices\' reports home from a USB stick'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "fleet" -d 'Show every device\'s last reported state, pending releases, and per-release counts'
complete -c bundler -n "__fish_bundler_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand keygen" -l out -d 'Where to write the private key (never overwritten)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and not __fish_seen_subcommand_from init rotate help" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and not __fish_seen_subcommand_from init rotate help" -f -a "init" -d 'Write trust/root.1 into a new mirror'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and not __fish_seen_subcommand_from init rotate help" -f -a "rotate" -d 'Write the next trust root, signed by the old and the new root keys'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and not __fish_seen_subcommand_from init rotate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -l mirror -d 'Mirror directory to write `trust/root.1` into' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -l root-key -d 'Private root key (repeat for several). All given keys sign' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -l root-pub -d 'Additional root public key that does not sign now (repeat for several)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -l root-threshold -d 'Root keys needed to sign a rotation' -r
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -l release-pub -d 'Release key, public or private file (repeat for several)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -l release-threshold -d 'Release keys needed to sign a manifest' -r
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -l index-pub -d 'Index key, public or private file (repeat for several)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -l index-threshold -d 'Index keys needed to sign a channel index' -r
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l mirror -d 'Mirror directory holding the current trust history' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l old-root-key -d 'Private key of the *current* root role (repeat until its threshold is met)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l root-key -d 'Private root key (repeat for several). All given keys sign' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l root-pub -d 'Additional root public key that does not sign now (repeat for several)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l root-threshold -d 'Root keys needed to sign a rotation' -r
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l release-pub -d 'Release key, public or private file (repeat for several)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l release-threshold -d 'Release keys needed to sign a manifest' -r
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l index-pub -d 'Index key, public or private file (repeat for several)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -l index-threshold -d 'Index keys needed to sign a channel index' -r
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "init" -d 'Write trust/root.1 into a new mirror'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'Write the next trust root, signed by the old and the new root keys'
complete -c bundler -n "__fish_bundler_using_subcommand trust; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand release" -l repo -d 'The operator\'s git repository' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand release" -l ref -d 'The ref (branch, tag or commit) to release' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l path -d 'Release only this sub-directory of the ref\'s tree' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l channel -d 'Channel name (a-z, 0-9, \'.\', \'_\', \'-\')' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l mirror -d 'Mirror directory to publish into' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand release" -l release-key -d 'Private key of the `release` role (repeat for a role that needs several signatures)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand release" -l index-key -d 'Private key of the `index` role (repeat likewise)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand release" -l deltas -d 'Make thin deltas from this many previous releases' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l expires -d 'How long the channel index stays valid (devices refuse it after)' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l not-after -d 'Devices may not apply the release after this long (default: no limit)' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l require-label -d 'Only devices with this label take the release (KEY=VALUE, repeatable)' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l rollout -d 'Start a staged rollout: the share of devices (0-100 %) that may take this release; widen it later with `bundler rollout`' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l level -d 'zstd compression level (1-22)' -r
complete -c bundler -n "__fish_bundler_using_subcommand release" -l no-binary-patches -d 'Keep large changed files inside the deltas\' git packs instead of sending them as binary (bsdiff) patches after the pack. Deltas then stay plain git bundles that `git fetch` accepts, but a rebuilt binary costs several times more bytes'
complete -c bundler -n "__fish_bundler_using_subcommand release" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand index; and not __fish_seen_subcommand_from refresh help" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand index; and not __fish_seen_subcommand_from refresh help" -f -a "refresh" -d 'Re-sign a channel index with a new expiry (and the next version)'
complete -c bundler -n "__fish_bundler_using_subcommand index; and not __fish_seen_subcommand_from refresh help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand index; and __fish_seen_subcommand_from refresh" -l mirror -d 'Mirror directory' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand index; and __fish_seen_subcommand_from refresh" -l channel -d 'The channel' -r
complete -c bundler -n "__fish_bundler_using_subcommand index; and __fish_seen_subcommand_from refresh" -l index-key -d 'Private key of the `index` role (repeat for a role that needs several signatures)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand index; and __fish_seen_subcommand_from refresh" -l expires -d 'New validity of the index, from now' -r
complete -c bundler -n "__fish_bundler_using_subcommand index; and __fish_seen_subcommand_from refresh" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand index; and __fish_seen_subcommand_from help" -f -a "refresh" -d 'Re-sign a channel index with a new expiry (and the next version)'
complete -c bundler -n "__fish_bundler_using_subcommand index; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l mirror -d 'Mirror directory' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l channel -d 'The channel' -r
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l index-key -d 'Private key of the `index` role (repeat for a role that needs several signatures)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l expires -d 'New validity of the index, from now' -r
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l percent -d 'Share of devices (0-100 %) that may take the latest release; also resumes a halted rollout. Devices already in stay in when it widens' -r
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l db -d 'Fleet database (`bundler serve --db` / `reports import --db`): widening checks the failure ratio there' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l max-failure-ratio -d 'Refuse to widen when more than this share of the devices that tried the release rolled it back' -r
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l halt -d 'Stop further uptake of the latest release; devices that applied it stay on it'
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -l force -d 'Widen even without a fleet database or over the failure ratio'
complete -c bundler -n "__fish_bundler_using_subcommand rollout" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand verify" -l trust -d 'The trust root a device is provisioned with (e.g. `MIRROR/trust/root.1`)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand verify" -l at -d 'Judge expiry at this Unix time instead of now' -r
complete -c bundler -n "__fish_bundler_using_subcommand verify" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand inspect" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand export" -l mirror -d 'Mirror directory to copy from' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand export" -l channel -d 'Channel to export' -r
complete -c bundler -n "__fish_bundler_using_subcommand export" -l to -d 'Destination (e.g. the `ferry/` directory on a mounted USB stick)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand export" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand demo" -l dir -d 'Directory to create (replaced if it holds an earlier demo)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand demo" -l agent -d 'The `ferry-agent` binary (default: next to `bundler`, built with cargo if missing)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand demo" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand serve" -l mirror -d 'Mirror directory to serve read-only (omit to accept reports only)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand serve" -l db -d 'Fleet database for reports (created if missing)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand serve" -l listen -d 'Address to listen on; port 0 picks a free one (the bound address is printed)' -r
complete -c bundler -n "__fish_bundler_using_subcommand serve" -l enroll-on-first-use -d 'Enroll an unknown device with the key its first valid batch is signed with (otherwise only devices enrolled with `bundler devices enroll` may report)'
complete -c bundler -n "__fish_bundler_using_subcommand serve" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and not __fish_seen_subcommand_from enroll list help" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and not __fish_seen_subcommand_from enroll list help" -f -a "enroll" -d 'Allow a device to report: record its id and public key'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and not __fish_seen_subcommand_from enroll list help" -f -a "list" -d 'List enrolled devices and their keys'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and not __fish_seen_subcommand_from enroll list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from enroll" -l db -d 'Fleet database (created if missing)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from enroll" -l replace -d 'Replace the key of an already enrolled device (a re-provisioned device); its sequence numbers start again'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from enroll" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from list" -l db -d 'Fleet database' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from list" -l json -d 'Print JSON'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from help" -f -a "enroll" -d 'Allow a device to report: record its id and public key'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from help" -f -a "list" -d 'List enrolled devices and their keys'
complete -c bundler -n "__fish_bundler_using_subcommand devices; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand reports; and not __fish_seen_subcommand_from import help" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand reports; and not __fish_seen_subcommand_from import help" -f -a "import" -d 'Ingest the report batches devices left on a USB stick and write their acks'
complete -c bundler -n "__fish_bundler_using_subcommand reports; and not __fish_seen_subcommand_from import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand reports; and __fish_seen_subcommand_from import" -l db -d 'Fleet database (created if missing)' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand reports; and __fish_seen_subcommand_from import" -l enroll-on-first-use -d 'Enroll an unknown device with the key its first valid batch is signed with'
complete -c bundler -n "__fish_bundler_using_subcommand reports; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand reports; and __fish_seen_subcommand_from help" -f -a "import" -d 'Ingest the report batches devices left on a USB stick and write their acks'
complete -c bundler -n "__fish_bundler_using_subcommand reports; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand fleet" -l db -d 'Fleet database' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand fleet" -l mirror -d 'Mirror directory: show each device\'s pending release from the verified channel index' -r -F
complete -c bundler -n "__fish_bundler_using_subcommand fleet" -l max-failure-ratio -d 'Advise halting a release when more than this share of the devices that tried it rolled it back (as `bundler rollout` refuses to widen then)' -r
complete -c bundler -n "__fish_bundler_using_subcommand fleet" -l json -d 'Print JSON instead of tables'
complete -c bundler -n "__fish_bundler_using_subcommand fleet" -s h -l help -d 'Print help'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "keygen" -d 'Make an Ed25519 key pair: FILE (PKCS#8 PEM, mode 0600) and FILE.pub; prints the key id'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "trust" -d 'Create or rotate the trust root'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "release" -d 'Publish the tree of a git ref as the next release of a channel'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "index" -d 'Manage a channel index'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "rollout" -d 'Widen, narrow, halt or resume the staged rollout of a channel\'s latest release (re-signs the index only); widening is refused over the fleet\'s failure ratio'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "verify" -d 'Verify a .ferry file or a whole mirror as a device would; prints OK or the typed reason'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "inspect" -d 'Print any Ferry document (root, manifest, index, .ferry) as JSON, without verifying'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "export" -d 'Copy what a USB stick needs for one channel (trust history, index, latest release)'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "demo" -d 'Run Ferry end to end in ./ferry-demo: repo, keys, mirror, and a real ferry-agent applying a full release, a delta, and a failing release that is rolled back'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "serve" -d 'Serve a mirror over HTTP and accept devices\' signed report batches (POST /v1/reports)'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "devices" -d 'Enroll devices (their public keys) and list them'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "reports" -d 'Take devices\' reports home from a USB stick'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "fleet" -d 'Show every device\'s last reported state, pending releases, and per-release counts'
complete -c bundler -n "__fish_bundler_using_subcommand help; and not __fish_seen_subcommand_from keygen trust release index rollout verify inspect export demo serve devices reports fleet help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bundler -n "__fish_bundler_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "init" -d 'Write trust/root.1 into a new mirror'
complete -c bundler -n "__fish_bundler_using_subcommand help; and __fish_seen_subcommand_from trust" -f -a "rotate" -d 'Write the next trust root, signed by the old and the new root keys'
complete -c bundler -n "__fish_bundler_using_subcommand help; and __fish_seen_subcommand_from index" -f -a "refresh" -d 'Re-sign a channel index with a new expiry (and the next version)'
complete -c bundler -n "__fish_bundler_using_subcommand help; and __fish_seen_subcommand_from devices" -f -a "enroll" -d 'Allow a device to report: record its id and public key'
complete -c bundler -n "__fish_bundler_using_subcommand help; and __fish_seen_subcommand_from devices" -f -a "list" -d 'List enrolled devices and their keys'
complete -c bundler -n "__fish_bundler_using_subcommand help; and __fish_seen_subcommand_from reports" -f -a "import" -d 'Ingest the report batches devices left on a USB stick and write their acks'
