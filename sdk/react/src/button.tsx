import type { ButtonHTMLAttributes, MouseEvent, ReactNode } from "react";
import { type SignInParams, useAuthAgent } from "./provider.js";

export interface SignInWithAuthAgentProps extends Omit<ButtonHTMLAttributes<HTMLButtonElement>, "type" | "children"> {
  /** The button's content and accessible name (default "Sign in with Auth Agent"); give `aria-label` too when it is only an icon. */
  label?: ReactNode;
  /** Scopes, resources or extra parameters for this button's sign-in, over the provider's. */
  signInParams?: SignInParams;
}

/**
 * A plain `<button>` that starts "Sign in with Auth Agent". It takes any
 * button attribute (`className`, `style`, `aria-*`, …). While a sign-in is
 * under way it is `aria-busy` and `aria-disabled` and ignores clicks, so a
 * double click starts one; it is not `disabled`, which would drop it from the
 * tab order and lose the focus of a keyboard user who just pressed it.
 * An `onClick` that calls `preventDefault()` stops the sign-in.
 */
export function SignInWithAuthAgent(props: SignInWithAuthAgentProps): ReactNode {
  const { label = "Sign in with Auth Agent", signInParams, onClick, ...rest } = props;
  const { signIn, isLoading } = useAuthAgent();
  const click = (event: MouseEvent<HTMLButtonElement>) => {
    if (isLoading) {
      return; // As a disabled button would: neither the app's onClick nor a second sign-in.
    }
    onClick?.(event);
    if (!event.isDefaultPrevented()) {
      void signIn(signInParams);
    }
  };
  return (
    <button {...rest} type="button" onClick={click} aria-disabled={isLoading ? true : rest["aria-disabled"]} aria-busy={isLoading}>
      {label}
    </button>
  );
}
