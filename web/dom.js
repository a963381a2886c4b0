// dom.js - the two DOM helpers the page's scripts share (app.js, admin.js): $ finds an
// element, el builds one with its attributes, listeners and children in one expression.

export const $ = (sel, root = document) => root.querySelector(sel);

// el('button', {class: 'x', text: 'Kick', onclick: f}, child...): attributes that are null
// or false are left out, true ones set empty; "on..." keys add listeners.
export const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...kids);
  return e;
};
