import { useEffect, useRef } from "preact/hooks";

/**
 * A modal question (the native <dialog>: focus stays inside, Escape cancels) for changes that
 * move traffic, such as moving an alias.
 */
export function ConfirmDialog(props: { open: boolean; title: string; question: string; confirm: string; onAnswer: (yes: boolean) => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const element = dialog.current!;
    if (props.open && !element.open) element.showModal();
    if (!props.open && element.open) element.close();
  }, [props.open]);
  return (
    <dialog ref={dialog} data-testid="confirm-dialog" aria-labelledby="confirm-title" onCancel={() => props.onAnswer(false)}>
      <h2 id="confirm-title">{props.title}</h2>
      <p data-testid="confirm-question">{props.question}</p>
      <div class="buttons">
        <button type="button" data-testid="confirm-no" onClick={() => props.onAnswer(false)}>
          Cancel
        </button>
        <button type="button" class="primary" data-testid="confirm-yes" onClick={() => props.onAnswer(true)}>
          {props.confirm}
        </button>
      </div>
    </dialog>
  );
}
