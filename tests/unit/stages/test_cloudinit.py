from __future__ import annotations

from kairos.stages.loader import load_text
from kairos.stages.model import parse_doc

CONFIG = """#cloud-config
hostname: node-{{ trunc 4 .MachineID }}
users:
- name: kairos
  passwd: kairos
  groups: [admin]
  ssh_authorized_keys:
  - ssh-ed25519 AAAA kairos@laptop
  - github:someone
- name: bob
  lock_passwd: true
ssh_authorized_keys:
- ssh-rsa BBBB everyone
runcmd:
- echo hi
write_files:
- path: /etc/motd
  content: hello
  permissions: "0600"
  owner: "bob:bob"
- path: /etc/plain
  content: x
  permissions: 644
growpart:
  devices: [/dev/sda]
stages:
  boot:
  - name: mine
    commands: [echo mine]
"""


def test_cloud_init_keys_map_to_yip_stages() -> None:
    doc = load_text(CONFIG, "/oem/90_custom.yaml")
    assert doc.errors == [] and doc.warnings == []
    boot = doc.stages["boot"]
    # the generated step first, then growpart's layout step, then the file's own steps
    assert [s.name for s in boot] == ["", "", "mine"]
    main = boot[0].payloads
    assert main["commands"] == ["echo hi"]
    assert main["users"]["kairos"] == {"passwd": "kairos", "groups": ["admin"]}
    assert main["users"]["bob"] == {"lock_passwd": True}
    assert main["authorized_keys"] == {
        "kairos": ["ssh-ed25519 AAAA kairos@laptop", "ssh-rsa BBBB everyone"],
        "bob": ["ssh-rsa BBBB everyone"],
    }
    assert main["files"] == [
        {"path": "/etc/motd", "content": "hello", "owner_string": "bob:bob",
         "permissions": 0o600},
        # cloud-init reads permissions as octal text: a bare 644 means 0o644
        {"path": "/etc/plain", "content": "x", "permissions": 0o644},
    ]
    assert boot[1].payloads == {"layout": {"device": {"path": "/dev/sda"},
                                           "expand_partition": {"size": 0}}}
    assert doc.stages["initramfs"][0].payloads == {
        "hostname": "node-{{ trunc 4 .MachineID }}"}
    assert doc.stages["network"][0].payloads == {"authorized_keys": {"kairos": ["github:someone"]}}
    assert all(s.generated for s in boot[:2])


def test_global_keys_go_to_root_without_users() -> None:
    doc = parse_doc({"ssh_authorized_keys": ["ssh-rsa K", "gitlab:me"]}, "x", cloud_config=True)
    assert doc.stages["boot"][0].payloads == {"authorized_keys": {"root": ["ssh-rsa K"]}}
    assert doc.stages["network"][0].payloads == {"authorized_keys": {"root": ["gitlab:me"]}}


def test_users_mapping_form_is_accepted() -> None:
    doc = parse_doc({"users": {"alice": {"passwd": "x"}}}, "x", cloud_config=True)
    assert doc.stages["boot"][0].payloads["users"] == {"alice": {"passwd": "x"}}


def test_without_header_cloud_init_keys_are_ignored_with_a_warning() -> None:
    doc = load_text("users:\n- name: a\nstages:\n  boot:\n  - commands: [x]\n", "/oem/x.yaml")
    assert [s.payloads for s in doc.stages["boot"]] == [{"commands": ["x"]}]
    assert doc.warnings and "no #cloud-config header" in doc.warnings[0]


def test_user_without_name_is_an_error() -> None:
    doc = parse_doc({"users": [{"passwd": "x"}]}, "x.yaml", cloud_config=True)
    assert doc.errors and "a user needs a name" in doc.errors[0]
