"""Plain cloud-init keys mapped onto stage steps, as yip's cloud-init loader does.

  users, runcmd, write_files, ssh keys without network  -> one `boot` step
  growpart.devices                                     -> `layout` expand steps in `boot`
  hostname                                             -> an `initramfs` step
  github:/gitlab: ssh keys                             -> a `network` step
Top-level ssh_authorized_keys go to every listed user, or to root when no user is listed.
Kairos writes `users` as a list of {name, passwd, ...}; a name -> {...} mapping is accepted too.
"""

from __future__ import annotations

from typing import Any

from kairos.stages.fields import (
    PayloadError,
    as_cloudinit_mode,
    as_map,
    as_map_list,
    as_str,
    as_str_list,
)
from kairos.stages.model import Step

CLOUDINIT_KEYS = ("users", "runcmd", "write_files", "ssh_authorized_keys", "hostname", "growpart")


def needs_network(key: str) -> bool:
    # yip's test: the key names a remote provider rather than being a key itself
    return key.startswith(("github", "gitlab"))


def user_entries(value: Any, where: str) -> list[dict[str, Any]]:
    """Users as a list of dicts with `name`, from either the list or the mapping form."""
    if value is None:
        return []
    if isinstance(value, dict):
        entries = []
        for name, spec in value.items():
            entry = dict(as_map(spec, f"{where}.{name}"))
            entry["name"] = str(name)
            entries.append(entry)
        return entries
    entries = as_map_list(value, where)
    for i, entry in enumerate(entries):
        if not as_str(entry.get("name"), f"{where}[{i}].name"):
            raise PayloadError(f"{where}[{i}]: a user needs a name")
    return entries


def write_files_payload(value: Any, where: str) -> list[dict[str, Any]]:
    files = []
    for i, item in enumerate(as_map_list(value, where)):
        entry: dict[str, Any] = {
            "path": as_str(item.get("path"), f"{where}[{i}].path"),
            "content": as_str(item.get("content"), f"{where}[{i}].content"),
        }
        if item.get("encoding"):
            entry["encoding"] = as_str(item.get("encoding"), f"{where}[{i}].encoding")
        if item.get("owner"):
            entry["owner_string"] = as_str(item.get("owner"), f"{where}[{i}].owner")
        mode = as_cloudinit_mode(item.get("permissions"), f"{where}[{i}].permissions")
        if mode is not None:
            entry["permissions"] = mode
        files.append(entry)
    return files


def cloudinit_stages(data: dict[str, Any], source: str) -> dict[str, list[Step]]:
    """The steps yip generates for a #cloud-config document (always the same shape, so op
    names and indexes match yip's; empty generated steps are dropped later)."""
    users: dict[str, dict[str, Any]] = {}
    keys: dict[str, list[str]] = {}
    global_keys = as_str_list(data.get("ssh_authorized_keys"), f"{source}: ssh_authorized_keys")
    for entry in user_entries(data.get("users"), f"{source}: users"):
        name = str(entry["name"])
        spec = {k: v for k, v in entry.items() if k not in ("name", "ssh_authorized_keys")}
        users[name] = spec
        own = as_str_list(entry.get("ssh_authorized_keys"),
                          f"{source}: users.{name}.ssh_authorized_keys")
        keys[name] = keys.get(name, []) + own + global_keys
    if not users and global_keys:
        keys["root"] = list(global_keys)

    local_keys: dict[str, list[str]] = {}
    remote_keys: dict[str, list[str]] = {}
    for user, user_keys in keys.items():
        for key in user_keys:
            (remote_keys if needs_network(key) else local_keys).setdefault(user, []).append(key)

    boot_payload: dict[str, Any] = {}
    runcmd = as_str_list(data.get("runcmd"), f"{source}: runcmd")
    if runcmd:
        boot_payload["commands"] = runcmd
    files = write_files_payload(data.get("write_files"), f"{source}: write_files")
    if files:
        boot_payload["files"] = files
    if users:
        boot_payload["users"] = users
    if local_keys:
        boot_payload["authorized_keys"] = local_keys
    boot = [Step(payloads=boot_payload, source=source, generated=True)]

    growpart = as_map(data.get("growpart"), f"{source}: growpart")
    for device in as_str_list(growpart.get("devices"), f"{source}: growpart.devices"):
        boot.append(Step(payloads={"layout": {"device": {"path": device},
                                              "expand_partition": {"size": 0}}},
                         source=source, generated=True))

    hostname = as_str(data.get("hostname"), f"{source}: hostname")
    initramfs = Step(payloads={"hostname": hostname} if hostname else {}, source=source,
                     generated=True)
    network = Step(payloads={"authorized_keys": remote_keys} if remote_keys else {},
                   source=source, generated=True)
    return {"boot": boot, "initramfs": [initramfs], "network": [network]}
