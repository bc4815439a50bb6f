// The snippet pasted into a page (minified to dist/snippet.min.js): a stub `cdp` that queues calls made
// before the library loads, each with the time it was made; then loads the library from the collector, which
// replays the queue in order. `__HOST__`, `__WRITE_KEY__` and `__OPTIONS__` are replaced with the collector's
// address, the source's write key and the load options (a JSON object, e.g. {"requireConsent": true}).
(function () {
  var c = (window.cdp = window.cdp || []);
  if (c.invoked) return;
  c.invoked = true;
  ['track', 'identify', 'page', 'screen', 'group', 'alias', 'reset', 'ready', 'consent', 'flush'].forEach(function (m) {
    c[m] = function () {
      c.push([m, Date.now()].concat([].slice.call(arguments)));
      return c;
    };
  });
  c.load = function (key, options) {
    options = options || {};
    var host = options.host || '__HOST__';
    c._load = [key, options, host, Date.now()];
    var s = document.createElement('script');
    s.async = true;
    s.src = host + '/cdp.js';
    (document.head || document.body).appendChild(s);
  };
  c.load('__WRITE_KEY__', __OPTIONS__);
})();
