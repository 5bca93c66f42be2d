"""The `queen proxy` command line, apart from the commands themselves: `queen serve` builds its
parser from this module without importing the proxy's web stack and database driver."""

from __future__ import annotations

import argparse

from queen.proxy.roles import ROLES

EXPIRY_CHOICES = ("24h", "7d", "30d", "1y", "never", "skip")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = commands.add_parser("proxy", help="run the auth proxy in front of the broker")
    proxy.add_argument("--port", type=int, help="HTTP port (overrides PORT, default 3000)")
    actions = proxy.add_subparsers(dest="proxy_command")
    user = actions.add_parser("create-user", help="create a proxy user (interactive by default)")
    user.add_argument("--username", help="unattended: the name; the password is read from stdin")
    user.add_argument("--role", choices=ROLES)
    user.add_argument("--expires", choices=EXPIRY_CHOICES, default="24h", help="token lifetime")
    token = actions.add_parser("create-token", help="print a revocable token for a service")
    token.add_argument("--username", required=True)
    token.add_argument("--role", choices=ROLES, help="create a password-less user when new")
    token.add_argument("--expires", choices=EXPIRY_CHOICES[:-1], default="never")
