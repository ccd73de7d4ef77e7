// Classroom panel (docs/protocol.md "Classroom"): chat, raise hand, and for admins the
// participant list with mute / allow-publish / remove buttons, the hand queue and lecture mode.
// The server enforces every rule; this only offers the buttons to the people they work for.

const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
};

/** Builds the panel inside `container` for client `c`; returns a function that removes it. */
export function attachClassroom(c, container) {
  const panel = el('aside', { id: 'classroom', className: 'classroom' });
  const mode = el('p', { className: 'lecture-state' });
  const handBtn = el('button', { type: 'button', id: 'btn-hand', textContent: 'Raise hand' });
  const admin = el('section', { className: 'admin', hidden: true });
  const lectureToggle = el('input', { type: 'checkbox', id: 'lecture-toggle' });
  const hands = el('ol', { id: 'hand-queue' });
  const people = el('ul', { id: 'people' });
  admin.append(
    el('label', {}, lectureToggle, ' Lecture mode (only approved students may speak)'),
    el('h3', { textContent: 'Raised hands' }), hands,
    el('h3', { textContent: 'Participants' }), people,
  );
  const chatLog = el('ul', { id: 'chat-log', className: 'chat-log' });
  const chatTo = el('select', { id: 'chat-to', ariaLabel: 'Send to' });
  const chatText = el('input', { id: 'chat-text', maxLength: 2000, placeholder: 'Message', autocomplete: 'off' });
  const chatForm = el('form', { id: 'chat-form', className: 'chat-form' },
    chatTo, chatText, el('button', { type: 'submit', textContent: 'Send' }));
  panel.append(mode, handBtn, admin, el('h3', { textContent: 'Chat' }), chatLog, chatForm);
  container.append(panel);

  let isAdmin = false;
  let handRaised = false;
  /** an admin holds our microphone muted */
  let heldByAdmin = false;
  /** track ids this page's admin holds muted */
  const held = new Set();

  const nameOf = (id) => (id === c.localParticipant?.id ? 'you'
    : c.participants.get(id)?.name ?? id);

  function setLecture(on) {
    mode.textContent = on ? 'Lecture mode: only approved students may speak.' : '';
    lectureToggle.checked = on;
  }

  function addChat(m) {
    const who = m.to ? `${m.name} → ${nameOf(m.to)}` : m.name;
    const time = new Date(m.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    chatLog.append(el('li', { className: m.to ? 'private' : '' },
      el('span', { className: 'meta', textContent: `${time} ${who}: ` }), m.text));
    chatLog.scrollTop = chatLog.scrollHeight;
  }

  function renderRecipients() {
    const chosen = chatTo.value;
    chatTo.replaceChildren(el('option', { value: '', textContent: 'Everyone' }));
    for (const p of c.participants.values()) {
      chatTo.append(el('option', { value: p.id, textContent: p.name }));
    }
    chatTo.value = [...chatTo.options].some((o) => o.value === chosen) ? chosen : '';
  }

  const button = (text, msg, cls = '') => {
    const b = el('button', { type: 'button', textContent: text, className: cls });
    b.addEventListener('click', () => {
      if (msg.type === 'remove_participant' && !confirm(`${text}?`)) return;
      c.send(msg);
      if (msg.type === 'admin_mute') {
        if (msg.muted) held.add(msg.track_id); else held.delete(msg.track_id);
        renderPeople();
      }
    });
    return b;
  };

  function renderPeople() {
    if (!isAdmin) return;
    people.replaceChildren();
    for (const p of c.participants.values()) {
      const row = el('li', {}, el('span', { className: 'who', textContent: p.name }));
      const audio = [...p.tracks.values()].find((t) => t.kind === 'audio');
      if (audio) {
        const on = held.has(audio.id);
        row.append(button(on ? 'Release mic' : 'Mute mic',
          { type: 'admin_mute', participant_id: p.id, track_id: audio.id, muted: !on }));
      }
      row.append(
        button('Allow to publish', { type: 'set_publish', participant_id: p.id, allowed: true }),
        button('Revoke', { type: 'set_publish', participant_id: p.id, allowed: false }),
        button('Remove', { type: 'remove_participant', participant_id: p.id, ban: false }, 'danger'),
        button('Remove and ban', { type: 'remove_participant', participant_id: p.id, ban: true }, 'danger'),
      );
      people.append(row);
    }
  }

  function renderHands(list) {
    hands.replaceChildren(...list.map((h) => el('li', {},
      el('span', { className: 'who', textContent: h.name }),
      button('Approve', { type: 'approve_hand', participant_id: h.participant_id }),
      button('Dismiss', { type: 'dismiss_hand', participant_id: h.participant_id }))));
  }

  function setHand(raised) {
    handRaised = raised;
    handBtn.textContent = raised ? 'Lower hand' : 'Raise hand';
    handBtn.setAttribute('aria-pressed', String(raised));
  }

  const refresh = () => { renderRecipients(); renderPeople(); };
  const on = (type, fn) => c.addEventListener(type, fn);
  on('joined', ({ detail }) => {
    isAdmin = !!detail.participant?.grants?.room_admin;
    admin.hidden = !isAdmin;
    handBtn.hidden = isAdmin;
    chatForm.hidden = detail.participant?.grants?.can_publish_data === false;
    setLecture(!!detail.classroom?.lecture_mode);
    chatLog.replaceChildren();
    for (const m of detail.classroom?.chat ?? []) addChat(m);
    renderHands(detail.classroom?.hands ?? []);
    refresh();
  });
  on('servererror', ({ detail }) => {
    // Unmuting while the teacher holds the mic is refused: show the mic as off again.
    if (detail.code === 'permission_denied' && heldByAdmin && !c.isMuted('audio')) {
      c.setMuted('audio', true);
      c.dispatchEvent(new CustomEvent('localmutechanged'));
    }
  });
  on('participantjoined', refresh);
  on('participantleft', refresh);
  on('participantupdated', refresh);
  on('classroom', ({ detail: { msg } }) => {
    switch (msg.type) {
      case 'chat': return addChat(msg);
      case 'hand': return setHand(msg.raised);
      case 'hand_queue': return renderHands(msg.hands);
      case 'lecture_mode': return setLecture(msg.enabled);
      case 'admin_muted':
        // Our own mic follows the teacher's mute; unmuting stays the student's choice.
        heldByAdmin = msg.muted;
        if (msg.muted) c.setMuted('audio', true);
        c.dispatchEvent(new CustomEvent('localmutechanged'));
        return undefined;
      default: return undefined;
    }
  });

  handBtn.addEventListener('click', () => c.send({ type: handRaised ? 'lower_hand' : 'raise_hand' }));
  lectureToggle.addEventListener('change', () => c.send({ type: 'set_lecture_mode', enabled: lectureToggle.checked }));
  chatForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = chatText.value.trim();
    if (!text) return;
    const msg = { type: 'chat', text };
    if (chatTo.value) msg.to = chatTo.value;
    c.send(msg);
    chatText.value = '';
  });

  return () => panel.remove();
}
