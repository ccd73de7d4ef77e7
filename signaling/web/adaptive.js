// Adaptive stream: reports how big a remote video is shown, so the server sends the smallest
// simulcast layer that looks sharp at that size, and nothing while it is not visible.
//
// watchVideo(video, report) calls report({width, height, enabled}) (device pixels) when the
// rendered size or the visibility of `video` changes, debounced; it returns a stop function.
// Hidden means: scrolled out of view (IntersectionObserver), page in the background
// (document.hidden), or not laid out (0x0, e.g. display: none).

const DEBOUNCE_MS = 300;

export function watchVideo(video, report, { debounceMs = DEBOUNCE_MS } = {}) {
  let inView = true;
  // Until the IntersectionObserver's first callback (next rendering update) whether the
  // video is in view is unknown; reporting "shown" meanwhile would make an on-demand client
  // ask for the camera of every offscreen tile of a large class.
  let viewKnown = typeof IntersectionObserver !== 'function';
  let timer = null;
  let last = '';

  const measure = () => {
    const dpr = window.devicePixelRatio || 1;
    const visible = inView && !document.hidden;
    const width = visible ? Math.round(video.clientWidth * dpr) : 0;
    const height = visible ? Math.round(video.clientHeight * dpr) : 0;
    return { width, height, enabled: width > 0 && height > 0 };
  };
  const flush = () => {
    timer = null;
    // A background page is known hidden without asking the observer (which may not run).
    if (!viewKnown && !document.hidden) return;
    const s = measure();
    const key = `${s.width}x${s.height}:${s.enabled}`;
    if (key === last) return;
    last = key;
    report(s);
  };
  // The first report goes out at once: until it arrives the server sends the full layer.
  // Later ones at most `debounceMs` after the first change: a report already due is not
  // pushed back, since a layout that keeps changing (a grid reflowing at every active-speaker
  // update) would otherwise hold the report back for as long as it keeps changing.
  const schedule = () => {
    if (timer) return;
    timer = setTimeout(flush, last ? debounceMs : 0);
  };

  const resize = typeof ResizeObserver === 'function' ? new ResizeObserver(schedule) : null;
  resize?.observe(video);
  const view = typeof IntersectionObserver === 'function'
    ? new IntersectionObserver((entries) => {
      inView = entries[entries.length - 1].isIntersecting;
      viewKnown = true;
      schedule();
    })
    : null;
  view?.observe(video);
  document.addEventListener('visibilitychange', schedule);
  schedule();

  return () => {
    if (timer) clearTimeout(timer);
    resize?.disconnect();
    view?.disconnect();
    document.removeEventListener('visibilitychange', schedule);
  };
}
