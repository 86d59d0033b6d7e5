"""SG Ready (001_…): two dry-contact channels that switch a heat pump or other load.

on / off modes: the relay is energised inside the channel's period (on: the load on N/O turns on; off: the
load on N/C turns off) and released outside it. auto mode (time control off): while the SOC condition holds
(at least / at most the threshold), feed-in above the switch-on power turns the load on, feed-in below the
switch-off power or buying from the grid turns it off, in between nothing changes. The load hangs on N/O
for "at least" (load on = relay energised) and on N/C for "at most" (load on = relay released). When the
SOC condition does not hold, the load is off. The output is the relay state."""
from ems.config.fields import parse_hhmm
from ems.strategies.base import Strategy, decision


class SgReady(Strategy):
    name = "sg_ready"

    def __init__(self, cfg):
        self.channels = []
        for n in (1, 2):
            ch = getattr(cfg.sg_ready, f"channel_{n}")
            if ch.enabled:
                self.channels.append((n, ch, parse_hhmm(ch.start), parse_hhmm(ch.end)))
        self.load_on = {n: False for n, *_ in self.channels}

    def decide(self, snap):
        if not self.channels:
            return None
        out, why = {}, []
        minute = snap.time.hour * 60 + snap.time.minute
        for n, ch, start, end in self.channels:
            if ch.mode in ("on", "off"):
                energised = start <= minute < end
                why.append(f"SG{n} {ch.mode} {'in' if energised else 'outside'} period")
            else:
                soc = snap.soc_pct
                ok = soc is not None and (soc >= ch.soc_pct if ch.soc_condition == "at_least" else soc <= ch.soc_pct)
                if not ok or snap.grid_w is None:
                    self.load_on[n] = False
                else:
                    feed_in = -snap.grid_w
                    if feed_in > ch.switch_on_feed_in_w:
                        self.load_on[n] = True
                    elif feed_in < ch.switch_off_feed_in_w or snap.grid_w > 0:
                        self.load_on[n] = False
                energised = self.load_on[n] if ch.soc_condition == "at_least" else not self.load_on[n]
                why.append(f"SG{n} auto: load {'on' if self.load_on[n] else 'off'}")
            out[f"sg_ready_{n}"] = energised
        return decision("; ".join(why), outputs=out)
