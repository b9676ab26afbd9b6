"""`manage.py connection_add`: add a connection from the command line (for scripts and first
set-up; the admin site does the same with a form).

The key is never an argument: anything on a command line is visible to other users in `ps` and
stays in the shell's history. Give the name of an environment variable that holds it
(`--key-env`), or pipe it in (`--key-stdin`), where it is stored encrypted.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify

from batches import keystore
from batches.models import AuthStyle, Connection, Dialect
from batches.services import connections as connection_services


class Command(BaseCommand):
    help = (
        "Add a connection (an OpenAI project, an Azure OpenAI resource or a compatible server). "
        "There is no option for the key itself, since command lines leak to ps and shell "
        "history: use --key-env VAR, or --key-stdin and pipe the key in."
    )
    # Runs even when the system checks find errors (an unreadable stored key, say): this command
    # is how such a problem is looked into or worked around, and it reports key problems itself.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", required=True, help="the name people see")
        parser.add_argument(
            "--slug", help="short name for URLs and commands (default: from --name)"
        )
        parser.add_argument(
            "--base-url",
            required=True,
            help="e.g. https://api.openai.com/v1, https://RESOURCE.openai.azure.com/openai/v1 "
            "(azure) or https://RESOURCE.openai.azure.com (azure-legacy)",
        )
        parser.add_argument(
            "--dialect", choices=Dialect.values, default=Dialect.OPENAI, help="default: openai"
        )
        parser.add_argument(
            "--auth-style",
            choices=AuthStyle.values,
            help="how the key is sent (default: api-key for the Azure dialects, else bearer)",
        )
        parser.add_argument("--api-version", help="Azure's dated API only (default 2024-10-21)")
        parser.add_argument("--organization", default="", help="sent as OpenAI-Organization")
        parser.add_argument("--project", default="", help="sent as OpenAI-Project")
        key = parser.add_mutually_exclusive_group(required=True)
        key.add_argument(
            "--key-env",
            metavar="VAR",
            help="read the key from this environment variable whenever it is needed",
        )
        key.add_argument(
            "--key-stdin",
            action="store_true",
            help="read the key from standard input (a prompt that does not echo on a "
            "terminal) and store it encrypted; needs BATCHWEB_ENCRYPTION_KEY",
        )
        parser.add_argument(
            "--max-requests", type=int, metavar="N", help="requests per input file at most"
        )
        parser.add_argument(
            "--deployment",
            action="append",
            default=[],
            metavar="NAME=MODEL",
            help="an Azure deployment and its model (repeat for several)",
        )
        parser.add_argument(
            "--group",
            action="append",
            default=[],
            metavar="GROUP",
            help="only members of this group may use it (repeat for several; default: everyone)",
        )
        parser.add_argument(
            "--disabled", action="store_true", help="add it disabled (not synced, no new batches)"
        )
        parser.add_argument("--test", action="store_true", help="test the connection once added")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        slug = options["slug"] or slugify(name)[:50]
        self._refuse_duplicates(name, slug)
        dialect = options["dialect"]
        auth_style = options["auth_style"] or (
            AuthStyle.API_KEY
            if dialect in (Dialect.AZURE, Dialect.AZURE_LEGACY)
            else AuthStyle.BEARER
        )
        connection = Connection(
            name=name,
            slug=slug,
            base_url=options["base_url"].strip().rstrip("/"),
            dialect=dialect,
            auth_style=auth_style,
            organization=options["organization"],
            project=options["project"],
            key_env=options["key_env"] or "",
            max_requests_per_file=options["max_requests"],
            deployments=_deployments(options["deployment"]),
            enabled=not options["disabled"],
        )
        if options["api_version"]:
            connection.api_version = options["api_version"]
        groups = _groups(options["group"])
        if options["key_stdin"]:
            try:
                connection.set_key(_read_key())
            except keystore.KeystoreError as error:
                raise CommandError(str(error)) from None
        try:
            connection.full_clean()
        except ValidationError as error:
            raise CommandError(_field_messages(error)) from None
        with transaction.atomic():
            connection.save()
            connection.groups.set(groups)

        self.stdout.write(self.style.SUCCESS(_summary(connection, groups)))
        if connection.key_env and not connection.has_key():
            self.stderr.write(
                f"Note: the environment variable {connection.key_env} is not set here; set it "
                "for the web and worker processes before using this connection."
            )
        if options["test"]:
            result = connection_services.connection_test(connection=connection)
            if not result.ok:
                raise CommandError(
                    "The connection was added, but the test failed. " + format_result(result)
                )
            self.stdout.write(format_result(result))

    def _refuse_duplicates(self, name: str, slug: str) -> None:
        same_name = Connection.objects.filter(name__iexact=name).first()
        if same_name:
            raise CommandError(
                f"A connection named “{same_name.name}” already exists (slug {same_name.slug}); "
                "choose another name, or change that one in the admin site."
            )
        same_slug = Connection.objects.filter(slug=slug).first()
        if same_slug:
            raise CommandError(
                f"The slug “{slug}” is already used by the connection “{same_slug.name}”; "
                "choose another with --slug."
            )


def format_result(result: connection_services.ConnectionTestResult) -> str:
    """A test result as plain text lines (shared with `manage.py connection_test`)."""
    lines = [result.message, *(f"  - {line}" for line in result.details)]
    if result.request_id and not any(result.request_id in line for line in lines):
        lines.append(f"  Request id {result.request_id}.")
    return "\n".join(lines)


def _read_key() -> str:
    # On a terminal, a prompt that does not echo; otherwise whatever was piped in.
    tty = sys.stdin.isatty()
    key = (getpass.getpass("API key (not shown): ") if tty else sys.stdin.read()).strip()
    if not key:
        raise CommandError("No key on standard input: pipe it in, e.g. `… --key-stdin < keyfile`.")
    if any(c.isspace() for c in key):
        raise CommandError(
            "The key on standard input has spaces or several lines; give only the key."
        )
    return key


def _deployments(pairs: list[str]) -> dict[str, str]:
    deployments: dict[str, str] = {}
    for pair in pairs:
        name, sep, model = pair.partition("=")
        if not sep or not name.strip() or not model.strip():
            raise CommandError(
                f"--deployment {pair!r}: write it as NAME=MODEL, e.g. gpt4o-batch=gpt-4o."
            )
        deployments[name.strip()] = model.strip()
    return deployments


def _groups(names: list[str]) -> list[Group]:
    found = {g.name: g for g in Group.objects.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        known = ", ".join(Group.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise CommandError(f"No group named {', '.join(missing)} (groups: {known}).")
    return [found[n] for n in dict.fromkeys(names)]


def _field_messages(error: ValidationError) -> str:
    if not hasattr(error, "error_dict"):
        return " ".join(error.messages)
    lines = ["The connection is not valid:"]
    for field, messages in error.message_dict.items():
        label = field.replace("_", " ") if field != "__all__" else "connection"
        lines.extend(f"  {label}: {message}" for message in messages)
    return "\n".join(lines)


def _summary(connection: Connection, groups: list[Group]) -> str:
    restricted = ", ".join(g.name for g in groups) or "everyone"
    state = "enabled" if connection.enabled else "disabled"
    return (
        f"Added the connection “{connection.name}” (slug {connection.slug}): "
        f"{connection.effective_base_url()}, {connection.get_dialect_display()}, key "
        f"{connection.key_source()}, {state}, for {restricted}."
    )
