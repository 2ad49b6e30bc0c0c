// tidings portal: the little that needs a script. A button with data-copy="<element id>"
// copies that element's text; where the clipboard is out of reach (a plain-http page
// that is not localhost), it selects the text so that Ctrl+C copies it.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  const done = (text) => {
    button.textContent = text;
    setTimeout(() => { button.textContent = label; }, 1500);
  };
  const select = () => {
    window.getSelection().selectAllChildren(source);
    done("Press Ctrl+C");
  };
  if (!navigator.clipboard) return select();
  navigator.clipboard.writeText(source.textContent).then(() => done("Copied"), select);
});
