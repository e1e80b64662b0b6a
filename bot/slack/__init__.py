"""Slack transport: Bolt AsyncApp, aiohttp server, Socket Mode, publishing replies.

Handlers turn text into a :class:`bot.reply.Reply`; this package only moves
requests in and replies out (acks, threads, uploads, retries, rate limits).
"""
