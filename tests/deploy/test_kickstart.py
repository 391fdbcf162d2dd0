"""Kickstart templates: rendering, the sandbox, the callback line, overrides."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pxeforge.deploy.kickstart import (
    KickstartError,
    TemplateRenderer,
    build_context,
    callback_command,
    installer_args,
)

UUID = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
URL = f"http://10.0.0.1:8080/ks/{UUID}"
CALLBACK = f"{URL}/done?token=abc_DEF-123"


def context(**info: Any) -> dict[str, Any]:
    return build_context(
        {
            "uuid": UUID,
            "name": "web1",
            "driver": "ipmi",
            "driver_info": {"ipmi_password": "s3cret"},  # must never reach a template
            "properties": {"cpus": 4},
            "instance_info": {"image_url": "http://mirror/centos/", "rescue_password": "x", **info},
            "extra": {"rack": "7"},
        },
        [{"address": "52:54:00:aa:bb:01", "pxe_enabled": True}],
        inventory=None,
        http_base="http://10.0.0.1:8080",
        api_base="http://10.0.0.1:6385",
        config_url=URL,
        callback_url=CALLBACK,
    )


@pytest.mark.parametrize("template", ["kickstart.ks.j2", "preseed.cfg.j2", "autoinstall.yaml.j2"])
def test_builtin_templates_render_with_the_callback(template: str) -> None:
    text = TemplateRenderer().render(template, context())
    assert UUID in text and "web1" in text
    assert "s3cret" not in text
    if template.startswith("autoinstall"):
        data = yaml.safe_load(text)  # valid YAML; the command survives JSON quoting
        assert data["autoinstall"]["late-commands"] == [callback_command(CALLBACK)]
        assert data["autoinstall"]["identity"]["hostname"] == "web1"
    else:
        assert callback_command(CALLBACK) in text


def test_kickstart_shape() -> None:
    text = TemplateRenderer().render("kickstart.ks.j2", context(root_device="vda"))
    assert 'url --url="http://mirror/centos/"' in text
    assert "--device=52:54:00:aa:bb:01" in text
    assert "ignoredisk --only-use=vda" in text
    assert f"%post --nochroot\n{callback_command(CALLBACK)}\n%end" in text
    assert "rootpw --lock" in text


def test_context_hides_secrets() -> None:
    ctx = context()
    assert "driver_info" not in ctx["node"]
    assert "rescue_password" not in ctx["node"]["instance_info"]


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ callback_command.__class__ }}",
        "{{ node.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.system('id') }}",
        "{{ lipsum.__globals__['os'] }}",
        "{% import 'os' as os %}",
        "{{ node.properties.__class__.__base__ }}",
    ],
)
def test_sandbox_refuses_escapes(tmp_path: Path, source: str) -> None:
    (tmp_path / "evil.j2").write_text(source)
    with pytest.raises(KickstartError):
        TemplateRenderer(tmp_path).render("evil.j2", context())


def test_strict_undefined_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "typo.j2").write_text("{{ node.propertys.cpus }}")
    with pytest.raises(KickstartError, match="propertys"):
        TemplateRenderer(tmp_path).render("typo.j2", context())
    (tmp_path / "syntax.j2").write_text("line\n{% if %}")
    with pytest.raises(KickstartError, match="line 2"):
        TemplateRenderer(tmp_path).render("syntax.j2", context())


def test_templates_dir_overrides_and_names() -> None:
    renderer = TemplateRenderer()
    assert renderer.template_for({}) == "kickstart.ks.j2"
    assert renderer.template_for({"install_type": "preseed"}) == "preseed.cfg.j2"
    assert renderer.template_for({"ks_template": "rocky9.ks"}) == "rocky9.ks"
    for bad in ("../etc/passwd", "/etc/passwd", ".hidden", "a/b", "", 7):
        with pytest.raises(KickstartError):
            renderer.template_for({"ks_template": bad})
    with pytest.raises(KickstartError, match="not found"):
        renderer.render("nope.ks", context())


def test_override(tmp_path: Path) -> None:
    (tmp_path / "kickstart.ks.j2").write_text("# mine {{ node.extra.rack }}\n{{ post_callback }}\n")
    text = TemplateRenderer(tmp_path).render("kickstart.ks.j2", context())
    assert text.startswith("# mine 7\n%post --nochroot\n")


def test_installer_args() -> None:
    assert installer_args({}, URL) == (f"inst.ks={URL}", {})
    assert installer_args({"ks_param": "ks"}, URL) == ("", {"ks": URL})
    assert installer_args({"install_type": "preseed"}, URL)[0].endswith(f"url={URL}")
    assert installer_args({"install_type": "autoinstall"}, URL)[0] == (
        f"autoinstall ds=nocloud-net;s={URL}/"
    )
    with pytest.raises(KickstartError):
        installer_args({"ks_param": "inst.ks.sendmac"}, URL)


def test_callback_command_runs_with_sh(tmp_path: Path) -> None:
    """The generated line is valid sh; with neither tool answering it fails (exit != 0)."""
    command = callback_command("http://127.0.0.1:9/ks/x/done?token=a")
    done = subprocess.run(["sh", "-n", "-c", command], capture_output=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(KickstartError):
        callback_command("http://x/'; rm -rf /")
