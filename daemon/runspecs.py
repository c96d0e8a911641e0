"""What `tandem run` alone needs from the configuration: each binding's timing, its
webhooks and its outbox. Apart from the wiring, which the short commands import too,
so that they load neither the HTTP intake nor the controller."""

from __future__ import annotations

from daemon.config import BindingsFile
from daemon.notify import NotifySpec
from daemon.settings import Settings
from daemon.webhooks import WebhookSpec
from reconcilers.controller import Timing
from reconcilers.model import Side
from reconcilers.resync import ListingLimits


def timing_for(settings: Settings, config: BindingsFile, name: str) -> Timing:
    """The process-wide intervals, with the binding's own where it sets them."""
    binding = config.binding(name)
    return Timing(
        workers=settings.workers,
        poll_interval=binding.poll_interval or settings.poll_interval,
        app_poll_interval=settings.app_poll_interval,
        resync_interval=binding.resync_interval or settings.resync_interval,
        reconcile_timeout=settings.reconcile_timeout,
        listing=ListingLimits(seconds=settings.listing_timeout, records=settings.listing_max_records),
    )


def webhook_specs(config: BindingsFile) -> dict[tuple[str, Side], WebhookSpec]:
    specs = {}
    for binding in config.bindings:
        for side, webhook in ((Side.APP, binding.app.webhook), (Side.EXTERNAL, binding.external.webhook)):
            if webhook is not None:
                specs[(binding.name, side)] = WebhookSpec(**webhook.model_dump())  # same keys
    return specs


def notify_specs(config: BindingsFile) -> dict[str, NotifySpec]:
    return {
        binding.name: NotifySpec(**notify.model_dump())
        for binding in config.bindings
        if (notify := binding.app.notify) is not None
    }
