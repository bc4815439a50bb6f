// cdp.js: the browser library, served by the collector at GET /cdp.js and loaded by the snippet.
//
// Segment-compatible calls (track, identify, page, screen, group, alias) become events in the Tracking API
// shape, batched to POST /v1/batch. The anonymous id lives in a first-party cookie on the registrable domain,
// mirrored in localStorage (the cookie wins); when both are blocked, an in-memory id is used. Events wait in a
// queue persisted in localStorage until the collector accepts them; each has a client-side messageId, so a
// resend is dropped by the server's deduplication. With `requireConsent`, nothing is sent or stored until
// `consent({analytics: true})`.
(function (w, d) {
  var stub = w.cdp;
  if (!stub || stub.loaded || !stub._load) return; // loaded twice, or without the snippet

  var VERSION = '__VERSION__';
  var PREFIX = 'cdp_';
  var QUEUE = PREFIX + 'q.';
  var YEAR = 365;
  var MAX_REQUEST = 60000; // keepalive and sendBeacon bodies must stay under 64 KB
  var MAX_EVENT = 32000; // the collector's limit per event
  var nav = w.navigator;
  var encoder = w.TextEncoder ? new TextEncoder() : null;
  function size(text) {
    return encoder ? encoder.encode(text).length : text.length * 3;
  }

  var load = stub._load || [];
  var writeKey = load[0];
  var options = load[1] || {};
  var host = String(load[2] || options.host || '').replace(/\/+$/, '');
  var flushAt = options.flushAt || 20;
  var flushInterval = options.flushInterval == null ? 1000 : options.flushInterval;
  var maxQueue = options.maxQueue || 1000;
  var retryBase = options.retryBase || 1000;
  var retryCap = options.retryCap || 60000;

  // ---- storage: cookie, localStorage, memory ----------------------------------------------------------
  var memory = {};
  var consent = null;
  var domain;

  function allowed() {
    return !options.requireConsent || !!(consent && consent.analytics);
  }

  function lsGet(key) {
    try {
      return w.localStorage.getItem(key);
    } catch (e) {
      return null;
    }
  }
  function lsSet(key, value) {
    try {
      if (value == null) w.localStorage.removeItem(key);
      else w.localStorage.setItem(key, value);
      return true;
    } catch (e) {
      return false;
    }
  }
  function lsKeys() {
    try {
      return Object.keys(w.localStorage);
    } catch (e) {
      return [];
    }
  }
  function cookieGet(name) {
    try {
      var m = d.cookie.match(new RegExp('(?:^|; )' + name + '=([^;]*)'));
      return m ? decodeURIComponent(m[1]) : null;
    } catch (e) {
      return null;
    }
  }
  function cookieSet(name, value, days, on) {
    try {
      var c = name + '=' + encodeURIComponent(value || '') + '; path=/; SameSite=Lax; max-age=' + (value == null ? 0 : days * 86400);
      if (on) c += '; domain=' + on;
      if (w.location.protocol === 'https:') c += '; Secure';
      d.cookie = c;
    } catch (e) {}
  }
  // The registrable domain: the shortest parent domain that accepts a cookie (public suffixes refuse them).
  function registrable() {
    if (domain !== undefined) return domain;
    domain = '';
    var host = w.location.hostname;
    if (options.cookieDomain) return (domain = options.cookieDomain);
    if (!host || /^[\d.]+$/.test(host) || host.indexOf('.') < 0 || host.indexOf(':') >= 0) return domain;
    var parts = host.split('.');
    for (var i = parts.length - 2; i >= 0; i--) {
      var candidate = parts.slice(i).join('.');
      cookieSet(PREFIX + 'test', '1', 1, candidate);
      if (cookieGet(PREFIX + 'test')) {
        cookieSet(PREFIX + 'test', null, 0, candidate);
        return (domain = candidate);
      }
    }
    return domain;
  }
  // A value kept in the cookie (if `cookie`) and localStorage, or only in memory when storing is not allowed.
  function get(key, cookie) {
    if (!allowed()) return memory[key] == null ? null : memory[key];
    var fromCookie = cookie ? cookieGet(PREFIX + key) : null;
    var value = fromCookie || lsGet(PREFIX + key) || memory[key] || null;
    if (value != null) set(key, value, cookie);
    return value;
  }
  function set(key, value, cookie) {
    memory[key] = value;
    if (!allowed()) return;
    if (cookie && cookieGet(PREFIX + key) !== value) cookieSet(PREFIX + key, value, YEAR, registrable());
    if (lsGet(PREFIX + key) !== value) lsSet(PREFIX + key, value);
  }

  // ---- ids and context ------------------------------------------------------------------------------------
  function uuid() {
    var c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    var b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = '';
    for (var j = 0; j < 16; j++) h += (b[j] + 256).toString(16).slice(1) + ([3, 5, 7, 9].indexOf(j) >= 0 ? '-' : '');
    return h;
  }

  function anonymousId(id) {
    if (id) set('aid', String(id), true);
    var current = get('aid', true);
    if (!current) set('aid', (current = uuid()), true);
    return current;
  }
  function userId() {
    return get('uid', true);
  }
  function traits() {
    try {
      return JSON.parse(get('traits') || '{}') || {};
    } catch (e) {
      return {};
    }
  }

  function page() {
    var l = w.location;
    var canonical = d.querySelector('link[rel="canonical"]');
    return {
      path: l.pathname,
      referrer: d.referrer,
      search: l.search,
      title: d.title,
      url: canonical && canonical.href ? canonical.href : l.href,
    };
  }
  function campaign() {
    var out = {};
    var found = false;
    w.location.search.replace(/[?&]utm_([^=&]+)=([^&]*)/g, function (_, k, v) {
      try {
        v = decodeURIComponent(v.replace(/\+/g, ' '));
      } catch (e) {}
      out[k === 'campaign' ? 'name' : k] = v;
      found = true;
    });
    return found ? out : undefined;
  }
  function context(extra) {
    var c = {
      library: { name: 'cdp.js', version: VERSION },
      page: page(),
      userAgent: nav.userAgent,
      locale: nav.language,
    };
    try {
      c.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch (e) {}
    var utm = campaign();
    if (utm) c.campaign = utm;
    if (consent) c.consent = { categoryPreferences: consent };
    for (var k in extra || {}) c[k] = extra[k];
    return c;
  }

  // ---- the queue --------------------------------------------------------------------------------------------
  var instance = uuid();
  var queue = [];
  var held = []; // events waiting for consent: in memory only
  var timer = null;
  var inFlight = false;
  var failures = 0;

  // Stores this page's queue with a heartbeat; `closed` (the page is going away) lets the next page adopt it
  // at once.
  function save(closed) {
    if (!allowed()) return;
    lsSet(QUEUE + instance, queue.length ? JSON.stringify({ t: closed === true ? 0 : Date.now(), q: queue }) : null);
  }
  // Queues left by pages that are gone (no heartbeat for 15 s) become this page's to send.
  function adopt() {
    if (!allowed()) return;
    lsKeys().forEach(function (key) {
      if (key.indexOf(QUEUE) !== 0 || key === QUEUE + instance) return;
      try {
        var stored = JSON.parse(lsGet(key));
        if (stored && Date.now() - stored.t < 15000) return;
        lsSet(key, null);
        if (stored && stored.q) queue = stored.q.concat(queue);
      } catch (e) {
        lsSet(key, null);
      }
    });
    trim();
    save();
  }
  function trim() {
    if (queue.length > maxQueue) {
      var dropped = queue.splice(0, queue.length - maxQueue);
      if (w.console) console.warn('cdp: queue full, dropped ' + dropped.length + ' oldest events');
    }
  }
  function schedule(delay) {
    if (timer) return;
    timer = setTimeout(function () {
      timer = null;
      flush();
    }, delay);
  }
  // The next request's events: in order, at most 100 and under the keepalive size limit.
  function take() {
    var out = [];
    var total = 100;
    for (var i = 0; i < queue.length && out.length < 100; i++) {
      var bytes = size(JSON.stringify(queue[i])) + 1;
      if (out.length && total + bytes > MAX_REQUEST) break;
      out.push(queue[i]);
      total += bytes;
    }
    return out;
  }
  function body(events) {
    var now = new Date().toISOString();
    events.forEach(function (e) {
      e.sentAt = now;
    });
    return JSON.stringify({ batch: events, sentAt: now, writeKey: writeKey });
  }
  function remove(events) {
    var sent = {};
    events.forEach(function (e) {
      sent[e.messageId] = 1;
    });
    queue = queue.filter(function (e) {
      return !sent[e.messageId];
    });
    save();
  }

  function flush() {
    if (inFlight || !queue.length || !allowed() || !w.fetch) return Promise.resolve();
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    var events = take();
    inFlight = true;
    return w
      .fetch(host + '/v1/batch', {
        method: 'POST',
        // text/plain keeps the request "simple": no CORS preflight. The write key travels in the body.
        headers: { 'Content-Type': 'text/plain' },
        body: body(events),
        keepalive: true,
        credentials: 'omit',
      })
      .then(function (res) {
        inFlight = false;
        if (res.ok || (res.status >= 400 && res.status < 500 && res.status !== 429 && res.status !== 408)) {
          // Delivered, or refused for good (a bad key or payload): retrying would not help.
          if (!res.ok && w.console) console.warn('cdp: the collector refused ' + events.length + ' events (' + res.status + ')');
          failures = 0;
          remove(events);
          if (queue.length) flush();
          return;
        }
        retry();
      })
      .catch(function () {
        inFlight = false;
        retry();
      });
  }
  function retry() {
    failures++;
    var delay = Math.min(retryCap, retryBase * Math.pow(2, failures - 1));
    schedule(delay * (0.75 + Math.random() * 0.5));
  }
  // The page is going away: hand what is queued to the browser, which sends it even after the page is gone.
  function beacon() {
    // A beacon cannot be retried: while the collector is failing or the browser is offline it would be
    // accepted and then lost, so the queue stays stored for the next page instead.
    if (!queue.length || !allowed() || !nav.sendBeacon || failures > 0 || nav.onLine === false) return save(true);
    while (queue.length) {
      var events = take();
      var ok = false;
      try {
        ok = nav.sendBeacon(host + '/v1/batch', new Blob([body(events)], { type: 'text/plain' }));
      } catch (e) {}
      if (!ok) break; // kept in storage, sent by the next page
      remove(events);
    }
    save(true);
  }

  function enqueue(event) {
    if (size(JSON.stringify(event)) > MAX_EVENT) {
      if (w.console) console.warn('cdp: event over 32 KB dropped: ' + (event.event || event.type));
      return;
    }
    if (!allowed()) {
      held.push(event);
      return;
    }
    queue.push(event);
    trim();
    save();
    if (queue.length >= flushAt) flush();
    else schedule(flushInterval);
  }

  function send(type, fields, opts, callback) {
    opts = opts || {};
    var event = {
      type: type,
      messageId: uuid(),
      timestamp: (opts.timestamp ? new Date(opts.timestamp) : new Date()).toISOString(),
      anonymousId: opts.anonymousId || anonymousId(),
      context: context(opts.context),
    };
    var uid = userId();
    if (uid) event.userId = uid;
    if (opts.integrations) event.integrations = opts.integrations;
    for (var k in fields) if (fields[k] !== undefined) event[k] = fields[k];
    enqueue(event);
    if (typeof callback === 'function') setTimeout(callback, 0);
    return api;
  }

  // Segment's argument shapes: optional leading strings, then objects, then a callback.
  function parse(args, strings) {
    var a = Array.prototype.slice.call(args);
    var callback = typeof a[a.length - 1] === 'function' ? a.pop() : undefined;
    var lead = [];
    while (lead.length < strings && (typeof a[0] === 'string' || a[0] == null) && a.length) lead.push(a.shift());
    return { lead: lead, props: a[0] || {}, opts: a[1], callback: callback };
  }
  function view(type, args) {
    var p = parse(args, 2);
    var name = p.lead.length > 1 ? p.lead[1] : p.lead[0];
    var category = p.lead.length > 1 ? p.lead[0] : undefined;
    var props = {};
    if (type === 'page') {
      var here = page();
      for (var k in here) props[k] = here[k];
    }
    for (var j in p.props) props[j] = p.props[j];
    if (name) props.name = name;
    if (category) props.category = category;
    return send(type, { name: name || undefined, category: category || undefined, properties: props }, p.opts, p.callback);
  }

  var api = {
    loaded: true,
    VERSION: VERSION,
    track: function (event, properties, opts, callback) {
      if (typeof properties === 'function') (callback = properties), (properties = opts = undefined);
      if (typeof opts === 'function') (callback = opts), (opts = undefined);
      return send('track', { event: event, properties: properties || {} }, opts, callback);
    },
    identify: function () {
      var p = parse(arguments, 1);
      var id = p.lead[0];
      if (id != null && id !== userId()) {
        if (userId()) set('traits', '{}'); // another person on this browser: their traits start empty
        set('uid', String(id), true);
      }
      var all = traits();
      for (var k in p.props) all[k] = p.props[k];
      set('traits', JSON.stringify(all));
      return send('identify', { traits: all }, p.opts, p.callback);
    },
    page: function () {
      return view('page', arguments);
    },
    screen: function () {
      return view('screen', arguments);
    },
    group: function () {
      var p = parse(arguments, 1);
      return send('group', { groupId: p.lead[0], traits: p.props }, p.opts, p.callback);
    },
    alias: function (to, from, opts, callback) {
      if (typeof from === 'object' && from) (callback = opts), (opts = from), (from = undefined);
      if (typeof from === 'function') (callback = from), (from = opts = undefined);
      var previous = from || userId() || anonymousId();
      set('uid', String(to), true);
      return send('alias', { userId: String(to), previousId: previous }, opts, callback);
    },
    reset: function () {
      ['aid', 'uid', 'traits'].forEach(function (key) {
        memory[key] = null;
        cookieSet(PREFIX + key, null, 0, registrable());
        cookieSet(PREFIX + key, null, 0);
        lsSet(PREFIX + key, null);
      });
      return api;
    },
    ready: function (callback) {
      if (typeof callback === 'function') setTimeout(callback, 0);
      return api;
    },
    // Consent categories, e.g. {analytics: true, marketing: false}. With requireConsent, events flow once
    // analytics is granted; the choice travels in context.consent.
    consent: function (categories) {
      if (categories === undefined) return consent;
      consent = {};
      for (var k in categories) consent[k] = !!categories[k];
      if (allowed()) {
        lsSet(PREFIX + 'consent', JSON.stringify(consent));
        anonymousId(memory.aid || undefined);
        if (memory.uid) set('uid', memory.uid, true);
        if (memory.traits) set('traits', memory.traits);
        held.splice(0).forEach(function (e) {
          e.context.consent = { categoryPreferences: consent };
          enqueue(e);
        });
        adopt();
        flush();
      } else {
        held = [];
      }
      return api;
    },
    user: function () {
      return {
        anonymousId: anonymousId,
        id: userId,
        traits: traits,
      };
    },
    flush: flush,
  };

  // A consent given on an earlier page holds.
  try {
    consent = JSON.parse(lsGet(PREFIX + 'consent') || 'null');
  } catch (e) {}

  w.cdp = api;
  adopt();
  setInterval(save, 5000); // heartbeat: this page's stored queue is not adopted by others while it lives
  w.addEventListener('pagehide', beacon);
  d.addEventListener('visibilitychange', function () {
    if (d.visibilityState === 'hidden') beacon();
  });
  w.addEventListener('online', function () {
    failures = 0;
    flush();
  });

  // The automatic page view, timed when the snippet ran.
  if (options.page !== false) api.page({}, { timestamp: load[3] ? new Date(load[3]).toISOString() : undefined });
  // Calls made before the library loaded, in order, each with the time it was made.
  for (var i = 0; i < stub.length; i++) {
    var call = stub[i];
    var method = api[call[0]];
    if (typeof method !== 'function') continue;
    var args = call.slice(2);
    if (call[1] && ['track', 'identify', 'page', 'screen', 'group', 'alias'].indexOf(call[0]) >= 0) {
      var at = new Date(call[1]).toISOString();
      args = withTimestamp(call[0], args, at);
    }
    method.apply(api, args);
  }
  if (queue.length) flush();

  // Puts {timestamp} into the options argument of a queued call, whatever its shape.
  function withTimestamp(method, args, at) {
    var callback = typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
    var strings = method === 'page' || method === 'screen' ? 2 : method === 'track' || method === 'identify' || method === 'group' ? 1 : 2;
    var lead = [];
    while (lead.length < strings && (typeof args[0] === 'string' || args[0] == null) && args.length) lead.push(args.shift());
    if (method === 'identify' || method === 'group') while (lead.length < 1) lead.push(undefined);
    if (method === 'page' || method === 'screen') while (lead.length < 2) lead.unshift(undefined);
    var props = args[0] || {};
    var opts = {};
    for (var k in args[1] || {}) opts[k] = args[1][k];
    opts.timestamp = at;
    var out = method === 'alias' ? lead.concat([opts]) : lead.concat([props, opts]);
    if (callback) out.push(callback);
    return out;
  }
})(window, document);
