"""Notifications: from the notification outbox to the subject's inbox or phone, once.

    workers (Effects.notify) --same transaction--> notification_outbox (queued)
        relay.py     polls queued rows, publishes notice.send (confirms) -> relayed
        notifier     (workers/notifier.py, run by consumer.SendingConsumer)
                     claims (sending) -> renders (templates.py) -> sends through
                     smtp.py / sms.py / files.py -> sent | failed

One module per outside system (smtp, sms, files); ``contacts`` resolves the
address at send time, ``ledger`` keeps each notice's delivery state.
"""
