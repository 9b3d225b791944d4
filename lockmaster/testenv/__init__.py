"""The TE host side: what runs on a hardware host carrying test environments (TEs).

- `libvirt_host`: the TE's libvirt domains, disks and networks (blocking libvirt-python calls),
  with `libvirt_conn` (one connection per URI per process, errors, lookups), `libvirt_xml`
  (what `ensure_te` defines) and `seed_upload` (writing a seed image into the seed's disk).
- `access`: the restricted account's `authorized_keys` (one forced-command line per leased TE)
  and each TE's lease state file, which the forced command reads.
- `commands`: the whitelisted commands a holder may run, parsed the same way everywhere.
- `agent`: a Unix-socket service inside the TE host worker that carries out those commands.
- `shell`: the forced command itself (`lockmaster te-shell`), which validates, logs and forwards.

Kept light on purpose: the forced command imports `shell`, which must not pull in libvirt.
"""
