"""Per-node installer configurations: kickstart, preseed and Ubuntu autoinstall.

Theory of operation
-------------------
The seed ``003_…txt`` flow: pxelinux boots the distribution's installer kernel and initrd with
``ks=http://…/ks.cfg`` on the command line; the installer fetches that file over HTTP and
installs unattended. pxeforge serves that file itself, rendered per node, at
``<http>/ks/<node uuid>``, and the file ends with a callback (``%post`` for kickstart,
``late_command`` for preseed, ``late-commands`` for autoinstall) that ``POST``\\ s to
``<http>/ks/<node uuid>/done?token=…`` so the node becomes ``active``.

Three *kinds* (`KINDS`), each with its default template and how the installer is told where
its file is (`installer_args`):

* ``kickstart`` (Anaconda: RHEL, CentOS, Fedora, Rocky, Alma) — ``inst.ks=<url>`` by default
  (Anaconda's name since RHEL 7; the unprefixed ``ks=`` was removed in Fedora 34 / RHEL 9),
  ``ks=<url>`` with ``instance_info.ks_param = "ks"`` for CentOS 6 as in the seed capture.
* ``preseed`` (Debian installer) — ``auto=true priority=critical url=<url>``.
* ``autoinstall`` (Ubuntu 20.04+ subiquity, cloud-init NoCloud) — ``autoinstall
  ds=nocloud-net;s=<url>/``: cloud-init then fetches ``<url>/user-data`` (the template) and
  ``<url>/meta-data`` (`meta_data`).

Templates are Jinja2, rendered in a `SandboxedEnvironment` (no attribute starting with ``_``,
no unsafe callables: a template cannot reach ``os`` or the interpreter through
``''.__class__…``), with `StrictUndefined` (a typo is an error, ``|default(…)`` for optional
values). The context holds plain data only (`build_context`): the node's public fields — never
``driver_info`` (BMC credentials) nor ``driver_internal_info`` — its ports, its hardware
inventory if any, and pxeforge's URLs. Templates in ``Settings.templates_dir`` override the
built-in ones of the same name (``kickstart.ks.j2``, ``preseed.cfg.j2``,
``autoinstall.yaml.j2``); ``instance_info.ks_template`` names another template there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from pxeforge.errors import PxeforgeError

__all__ = [
    "BUILTIN_TEMPLATES",
    "DEFAULT_KIND",
    "KINDS",
    "Kind",
    "KickstartError",
    "TemplateRenderer",
    "build_context",
    "callback_command",
    "installer_args",
    "meta_data",
]

BUILTIN_TEMPLATES: Final = Path(__file__).with_name("templates")
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
#: instance_info keys never shown to a template (secrets meant for other consumers).
_HIDDEN_INSTANCE_INFO: Final = frozenset({"rescue_password", "configdrive"})


class KickstartError(PxeforgeError):
    """A template or an instance_info value that cannot produce an installer configuration."""


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    template: str  # default template file name
    description: str


KINDS: Final = {
    k.name: k
    for k in (
        Kind("kickstart", "kickstart.ks.j2", "Anaconda kickstart (RHEL, CentOS, Fedora)"),
        Kind("preseed", "preseed.cfg.j2", "Debian installer preseed"),
        Kind("autoinstall", "autoinstall.yaml.j2", "Ubuntu autoinstall (cloud-init user-data)"),
    )
}
DEFAULT_KIND: Final = "kickstart"
KS_PARAMS: Final = ("inst.ks", "ks")


def kind_of(instance_info: Mapping[str, Any]) -> Kind:
    """The installer kind of a deploy (``instance_info.install_type``, default kickstart)."""
    name = instance_info.get("install_type", DEFAULT_KIND)
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise KickstartError(
            f"instance_info.install_type {name!r} is not one of {', '.join(KINDS)}"
        )
    return kind


def installer_args(instance_info: Mapping[str, Any], url: str) -> tuple[str, dict[str, str]]:
    """(kernel command-line words, BootSpec ``extra``) telling the installer where ``url`` is.

    For ``ks_param = "ks"`` the URL goes in ``extra["ks"]`` (the renderers put ``ks=`` first,
    the seed's shape); otherwise on the command line.
    """
    kind = kind_of(instance_info)
    if kind.name == "preseed":
        return f"auto=true priority=critical url={url}", {}
    if kind.name == "autoinstall":
        return f"autoinstall ds=nocloud-net;s={url}/", {}
    param = instance_info.get("ks_param", KS_PARAMS[0])
    if param not in KS_PARAMS:
        raise KickstartError(f"instance_info.ks_param {param!r} is not one of {KS_PARAMS}")
    if param == "ks":
        return "", {"ks": url}
    return f"{param}={url}", {}


def callback_command(url: str) -> str:
    """A shell line that POSTs to ``url`` with curl, else wget (busybox's too)."""
    if "'" in url:
        raise KickstartError("callback URL must not contain a single quote")
    return f"curl -fsS -X POST '{url}' || wget -q -O /dev/null --post-data=done '{url}'"


def meta_data(uuid: str, name: str | None) -> str:
    """cloud-init NoCloud ``meta-data`` for autoinstall."""
    return f"instance-id: {uuid}\nlocal-hostname: {name or uuid}\n"


def build_context(
    node: Mapping[str, Any],
    ports: Sequence[Mapping[str, Any]],
    *,
    inventory: Mapping[str, Any] | None,
    http_base: str,
    api_base: str,
    config_url: str,
    callback_url: str,
) -> dict[str, Any]:
    """The template context: plain dicts and strings only (see the module docstring).

    ``node`` needs ``uuid``, ``name``, ``driver``, ``properties``, ``instance_info``,
    ``extra``; other keys are ignored (``driver_info`` never reaches a template).
    """
    info = {
        k: v for k, v in dict(node.get("instance_info") or {}).items()
        if k not in _HIDDEN_INSTANCE_INFO
    }  # fmt: skip
    public = {
        "uuid": node["uuid"],
        "name": node.get("name"),
        "driver": node.get("driver"),
        "properties": dict(node.get("properties") or {}),
        "instance_info": info,
        "extra": dict(node.get("extra") or {}),
        "resource_class": node.get("resource_class"),
    }
    port_list = [
        {
            "address": p["address"],
            "pxe_enabled": bool(p.get("pxe_enabled", True)),
            "local_link_connection": dict(p.get("local_link_connection") or {}),
            "extra": dict(p.get("extra") or {}),
        }
        for p in ports
    ]
    command = callback_command(callback_url)
    return {
        "node": public,
        "ports": port_list,
        "pxe_macs": [p["address"] for p in port_list if p["pxe_enabled"]],
        "inventory": dict(inventory) if inventory is not None else None,
        "pxeforge": {
            "http_base": http_base,
            "api_base": api_base,
            "config_url": config_url,
            "callback_url": callback_url,
        },
        "callback_url": callback_url,
        "callback_command": command,
        "post_callback": f"%post --nochroot\n{command}\n%end",
    }


class TemplateRenderer:
    """Renders installer templates in a Jinja2 sandbox; ``templates_dir`` overrides ours.

    The constructor touches no disk: Jinja's loaders read a template when it is first used
    (and re-check its modification time on later uses, so an edited template is picked up).
    """

    def __init__(self, templates_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
        loaders.append(jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES)))
        self.env = SandboxedEnvironment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def template_for(self, instance_info: Mapping[str, Any]) -> str:
        """The template name of a deploy: ``instance_info.ks_template`` or the kind's own."""
        name = instance_info.get("ks_template")
        if name is None:
            return kind_of(instance_info).template
        if (
            not isinstance(name, str)
            or not name
            or name.startswith(".")
            or any(c not in _NAME_CHARS for c in name)
        ):
            raise KickstartError(
                f"instance_info.ks_template {name!r}: a file name in the templates directory "
                "(letters, digits, '-', '_', '.'; no directories)"
            )
        return name

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """Render template ``name``; `KickstartError` says what went wrong and where."""
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateNotFound:
            raise KickstartError(f"template {name!r} not found") from None
        except jinja2.TemplateSyntaxError as exc:
            raise KickstartError(f"template {name!r} line {exc.lineno}: {exc.message}") from None
        except jinja2.exceptions.SecurityError as exc:
            raise KickstartError(f"template {name!r} refused by the sandbox: {exc}") from None
        except jinja2.TemplateError as exc:
            raise KickstartError(f"template {name!r}: {exc}") from None
