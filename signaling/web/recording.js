// Recording (docs/protocol.md "Recording"): everyone in a recorded room sees the indicator;
// a room admin gets the button that starts and stops it, and a link to replay what was
// recorded. The server enforces who may record; this only shows the button to admins.

const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
};

/**
 * Puts the indicator and the admin's button into `container` for client `c`; `token` (the
 * page's room_admin token) lets the replay page read the recording. Returns a remover.
 */
export function attachRecording(c, container, token) {
  const indicator = el('span', {
    id: 'recording-indicator', className: 'recording-indicator', hidden: true,
    textContent: '● Recording', title: 'This room is being recorded',
  });
  indicator.setAttribute('role', 'status');
  const button = el('button', { type: 'button', id: 'btn-record', hidden: true, textContent: 'Start recording' });
  const replay = el('a', { id: 'replay-link', hidden: true, target: '_blank', textContent: 'Replay' });
  const notice = el('span', { id: 'recording-notice', className: 'recording-notice' });
  const box = el('span', { className: 'recording' }, indicator, button, replay, notice);
  container.append(box);
  let active = false;

  function show(msg) {
    active = !!msg.active;
    indicator.hidden = !active;
    button.textContent = active ? 'Stop recording' : 'Start recording';
    notice.textContent = msg.error ? `Recording stopped: ${msg.error}` : '';
    if (!active && msg.recording_id && !button.hidden) {
      replay.href = `/replay.html?recording=${encodeURIComponent(msg.recording_id)}#token=${encodeURIComponent(token ?? '')}`;
      replay.hidden = false;
    }
  }

  c.addEventListener('joined', ({ detail }) => {
    button.hidden = !detail.participant?.grants?.room_admin;
    // A resumed session gets the current state again right after `joined`.
    show({ active: false });
  });
  c.addEventListener('recording', ({ detail: { msg } }) => show(msg));
  c.addEventListener('servererror', ({ detail }) => {
    if (detail.code === 'recording_unavailable') notice.textContent = detail.message;
  });
  button.addEventListener('click', () => c.send({ type: 'set_recording', enabled: !active }));
  return () => box.remove();
}
