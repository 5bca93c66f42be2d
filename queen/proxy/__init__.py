"""The auth proxy (`queen proxy`): logins, users and roles in schema queen_proxy, SSO passthrough
and Google sign-in in front of the broker, which it reaches through a streaming reverse proxy with
the broker's own route levels applied first (spec security-cluster.md §4).
"""
